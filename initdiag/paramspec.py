"""Per-parameter initial values of a layer, parsed into its LayerSpec (speclayers) and drawn by network:

    bias_init: 0.1 | zeros | {normal: {std: 0.02}} | {uniform: ...} | torch_default   any scheme that fits a vector
    inits: {attention.output_weights: {normal: {std: 0.0029}}, ffn.out_weights: zeros}   one scheme per parameter
    supplied: block0.npz (or a folder of NAME.npy)                                     exact values (supplied.py)
    tie: embedding_0                                                                   a dense layer's matrix is that table

Parameter names are the kind's own (layers.LayerKind.parameter_shapes), never a list kept here. Which init
gives which parameter, the first that applies:
  the main matrix (the kind's first weight: dense/conv `weights`, `input_weights`, `attention.query_weights`,
      an embedding's table): tie, supplied, `init`;
  rnn/lstm/gru `recurrent_weights`: supplied, recurrent_init;
  another matrix of a block drawn from init (attention, transformer): supplied, inits[name], `init`;
  a vector (a bias, a transformer's norm gamma/beta): supplied, inits[name], bias_init (biases), the kind's default.
When the main matrix is supplied or tied, the layer's `init` becomes a labelled InitSpec (scheme "supplied":
no variance is assumed of it) so reports and checks see where it came from; a block's other matrices then keep
the written init through `inits`. `check --scheme X` (reinitialized) draws every matrix from X, supplied and
per-parameter ones included; a tied matrix stays tied, and vectors keep their supplied values and inits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag import schemes, supplied
from initdiag.initspec import InitSpec, parse_init
from initdiag.layers import LAYERS
from initdiag.validate import format_path
from initdiag.yamlsource import Location, SpecProblem

_CONSTANT = {"zero": lambda params: 0.0, "ones": lambda params: 1.0, "constant": lambda params: params["value"]}


class Tie(NamedTuple):
    """A dense layer's `tie:`: its matrix is the named embedding's table, transposed (the same array)."""

    layer: str  # the embedding layer's name
    location: Location | None
    path: str  # e.g. "layers[5].tie"


def parse_bias_init(check, path: tuple, value):
    """A number (every bias starts there), or an InitSpec of a scheme that fits a vector; None if invalid.
    A constant scheme (zeros, ones, {constant: c}) is read as its number."""
    if value is None or isinstance(value, (bool, int, float)):
        return check.number(path, value)
    unfit = _unfit_for_vectors(value)  # before its parameters are read (a supplied file is not opened)
    if unfit:
        check.problem(path, unfit)
        return None
    init = parse_init(check, path, value)
    if init is None or init.scheme not in _CONSTANT:
        return init
    return float(_CONSTANT[init.scheme](init.params))


def _unfit_for_vectors(value) -> str | None:
    """Why the scheme `value` names cannot draw a vector, or None (also for a name parse_init will refuse)."""
    name = value if isinstance(value, str) else next(iter(value), None) if isinstance(value, dict) and len(value) == 1 else None
    try:
        scheme = schemes.lookup(name) if isinstance(name, str) else None
    except ValueError:
        return None
    if scheme is None or "vector" in scheme.roles:
        return None
    return schemes.problem(scheme, dict(scheme.params), schemes.vector((1,), (1, 1))) + _vector_hint(scheme.name)


def _vector_hint(scheme: str) -> str:
    if scheme == "supplied":
        return "; give exact biases in a layer's supplied: FILE.npz (an array named bias)"
    if schemes.SCHEMES[scheme].rule is not None:
        return ("; a bias has no fans (torch refuses them on a 1-D tensor): use normal, uniform or torch_default "
                "(U(±1/sqrt(fan_in)) with the layer's fan_in)")
    return ""


def parse(check, path: tuple, raw: dict, kind, input_shape, geometry, init, bias, name) -> tuple:
    """(init, fields): the LayerSpec fields `inits`, `supplied` and `tie` of a layer written at `path`, and the
    init it shows for its main matrix (labelled when supplied or tied). Problems are located on `check`."""
    written_init = "init" in raw
    raw = {key: value for key, value in raw.items() if key in ("supplied", "inits", "tie") and key in kind.accepts}
    if geometry is None or input_shape is None or not raw:  # (a key the kind does not take is reported already)
        return init, {}
    config = geometry[4]
    try:
        declared = kind.parameter_shapes(input_shape, config, bool(bias))
    except ValueError:  # the kind's own shape problem is reported already
        return init, {}
    matrices = _matrices(kind, input_shape, config)
    main = next(iter(matrices), None)
    fields = {}
    given = supplied.read(check, path + ("supplied",), raw["supplied"], declared, name) if "supplied" in raw else None
    if given is not None:
        fields["supplied"] = given
    if "inits" in raw:
        fields["inits"] = _inits(check, path + ("inits",), raw["inits"], kind, declared, matrices, main, name, given)
    if "tie" in raw:
        tie = _tie(check, path, raw, given, main, written_init)
        if tie is not None and init is not None:
            fields["tie"] = tie
            return _labelled(init, matrices[main], tie.path, tie.location, f"tied to {tie.layer}"), fields
    if given is not None and main in given.shapes and init is not None:
        if kind.weights_from_init:  # the other matrices are still drawn by the written init
            inits = fields.setdefault("inits", {})
            for other in list(matrices)[1:]:
                if other not in inits and other not in given.shapes:
                    inits[other] = init
        where = path + ("supplied",)
        label = _labelled(init, matrices[main], format_path(where), check.doc.where(where), f"supplied({given.written})")
        return label._replace(params={**label.params, "path": given.file, "member": main}), fields
    return init, fields


def _labelled(init: InitSpec, geometry, path: str, location, label: str) -> InitSpec:
    return InitSpec("supplied", {"path": None, "shape": tuple(geometry.shape)}, path, location, label)


def _matrices(kind, input_shape, config) -> dict:
    """{name: schemes.Geometry} of the kind's declared weight matrices, in draw order (the first is the main one)."""
    if kind.weights is None:
        return {}
    return {name: schemes.Geometry(tuple(w.shape), w.role, schemes.Fans(*w.fans), tuple(w.kernel), w.groups)
            for name, w in kind.weights(input_shape, config).items()}


def _inits(check, path, value, kind, declared, matrices, main, name, given) -> dict:
    if not isinstance(value, dict) or not value:
        check.problem(path, f"expected a mapping of parameter names to schemes, e.g. {{{_example(declared, main)}: zeros}}, "
                      f"not {check.show(value)}")
        return {}
    inits = {}
    for key, written in value.items():
        where = path + (key,)
        if key not in declared:
            check.problem(where, f"'{key}' is not a parameter of {name} (its parameters: {', '.join(declared)})", key=True)
            continue
        if key == main:
            check.problem(where, f"{key} is the matrix the layer's init draws: set init instead", key=True)
            continue
        if key in matrices and matrices[key].role == "recurrent" and "recurrent_init" in kind.takes:
            check.problem(where, f"{key} is drawn by recurrent_init: set recurrent_init instead", key=True)
            continue
        if given is not None and key in given.shapes:
            check.problem(where, f"{key} is also in the supplied file '{given.written}': give it once", key=True)
            continue
        unfit = None if key in matrices else _unfit_for_vectors(written)
        if unfit:
            check.problem(where, unfit)
            continue
        spec = parse_init(check, where, written)
        if spec is None:
            continue
        geometry = matrices.get(key) or schemes.vector(declared[key], _fans(matrices, key, main, declared[key]))
        why = spec.shape_problem(geometry)
        if why:
            check.problem(where, why + (_vector_hint(spec.scheme) if geometry.role == "vector" else ""))
            continue
        inits[key] = spec
    return inits


def _example(declared, main) -> str:
    return next((key for key in declared if key != main), "bias")


def _fans(matrices: dict, name: str, main, shape) -> tuple:
    """A vector's fans: those of its own matrix (query_bias: query_weights), else of the main matrix."""
    own = matrices.get(name.replace("bias", "weights")) or (matrices[main] if main else None)
    return tuple(own.fans) if own is not None else (shape[0], shape[0])


def _tie(check, path, raw, given, main, written_init: bool) -> Tie | None:
    where = path + ("tie",)
    target = check.string(where, raw["tie"])
    if target is None:
        return None
    if written_init:
        check.problem(where, "tie and init on one layer: a tied matrix is the embedding's table, not drawn; drop init")
        return None
    if given is not None and main in given.shapes:
        check.problem(where, f"tie and a supplied {main}: the tied matrix is the embedding's table; drop one")
        return None
    return Tie(target, check.doc.where(where), format_path(where))


def check_ties(check, layers: list, names: dict) -> None:
    """Every `tie:` names an earlier embedding layer whose (vocab, dim) table, transposed, is the dense
    layer's (fan_in, units) matrix; located problems otherwise (`names`: every layer name written)."""
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        tie = layer.tie
        if tie is None:
            continue
        target = by_name.get(tie.layer)
        message = None
        if target is None:
            if tie.layer in names:
                continue  # that layer has a problem of its own
            tables = [other.name for other in layers if LAYERS[other.kind].reads_tokens]
            message = f"no layer is named '{tie.layer}' (embedding layers: {', '.join(tables) or 'none'})"
        elif not LAYERS[target.kind].reads_tokens:
            message = f"'{tie.layer}' is a {target.kind} layer, not an embedding: tie names a token embedding"
        elif target.index >= layer.index:
            message = f"'{tie.layer}' comes after this layer: tie names an earlier embedding"
        else:
            table = table_shape(target)
            if (layer.fan_in, layer.units) != table[::-1]:
                message = (f"the table of '{tie.layer}' is [vocab, dim] = {list(table)}, so a tied dense layer is "
                           f"[fan_in, units] = {list(table[::-1])}; this one is {[layer.fan_in, layer.units]}")
        if message:
            check.problems.append(SpecProblem(tie.location, tie.path, message, file=check.doc.file))


def table_shape(layer) -> tuple:
    """An embedding layer's table as it holds it, (vocab, dim)."""
    return tuple(LAYERS[layer.kind].parameter_shapes(layer.input_shape, layer.config)["weights"])


def tied_matrix(spec, layer, built: list) -> np.ndarray:
    """The tied dense layer's (dim, vocab) matrix: the built embedding's table, transposed (a view, no copy)."""
    index = next(i for i, other in enumerate(spec.layers) if other.name == layer.tie.layer)
    return supplied.held(built[index])["weights"].T


def drawn_by(layer, name: str, j: int):
    """The InitSpec that draws the layer's j-th weight matrix `name` (None: the supplied file gives it)."""
    if j == 0:
        return layer.init
    if layer.supplied is not None and name in layer.supplied.shapes:
        return None
    return layer.inits.get(name, layer.init)


def main_supplied(layer) -> bool:
    """Whether the layer's main matrix comes from its supplied file (its init is still the file's label)."""
    return layer.supplied is not None and layer.init is not None and layer.init.params.get("member") in layer.supplied.shapes


def supplied_skip(layer) -> tuple:
    """Names of the supplied file not to write: the main matrix once `init` no longer is the file's."""
    if layer.supplied is None or main_supplied(layer) or LAYERS[layer.kind].weights is None:
        return ()
    return (next(iter(LAYERS[layer.kind].weights(layer.input_shape, layer.config))),)


def vector_geometry(layer, name: str, shape) -> schemes.Geometry:
    matrices = _matrices(LAYERS[layer.kind], layer.input_shape, layer.config)
    return schemes.vector(shape, _fans(matrices, name, next(iter(matrices), None), shape))


def position(layer, name: str) -> int:
    """The parameter's place among the kind's declared parameters (its random stream's key)."""
    return list(LAYERS[layer.kind].parameter_shapes(layer.input_shape, layer.config, layer.bias)).index(name)


def reinitialized(layer, init: InitSpec):
    """The layer as `check --scheme` runs it: every weight matrix drawn by `init` (a supplied or per-parameter
    one too), a tied matrix kept tied; vectors keep their inits and supplied values."""
    if layer.init is None or layer.tie is not None:
        return layer
    matrices = _matrices(LAYERS[layer.kind], layer.input_shape, layer.config)
    inits = {name: spec for name, spec in layer.inits.items() if name not in matrices}
    given = layer.supplied.without(matrices) if layer.supplied is not None else None
    return layer._replace(init=init, inits=inits, supplied=given)


def vector_moments(init, fans) -> tuple:
    """(mean, variance) of a vector drawn by `init` (a scheme that fits a vector) with the layer's fans."""
    definition = init.definition
    if init.scheme in _CONSTANT:
        return float(_CONSTANT[init.scheme](init.params)), 0.0
    if definition.affine is None:
        return 0.0, 0.0
    return definition.mean(fans, init.params), definition.std(fans, init.params) ** 2
