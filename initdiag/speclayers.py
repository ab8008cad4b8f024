"""The layers of a spec: their kinds, options and shapes, parsed into plain LayerSpec records.

A layer's kind decides which keys it takes and how its options become a config, an output shape
and PyTorch's fans; residual blocks nest layers and are flattened into run order here. A layer reads
the layer above it, or the layers its `inputs:` name (a graph: specgraph.py).
"""

from __future__ import annotations

from typing import NamedTuple

from initdiag import activations, paramspec
from initdiag.layers import ALIASES, LAYERS, lookup
from initdiag.layers.declare import CHANNELS, COMMON_KEYS, SEQUENCE, InputError
from initdiag.initspec import InitSpec, parse_init
from initdiag.specgraph import GRAPH_KEYS, INPUT, INPUT_NAME, Graph
from initdiag.validate import Checker, format_path
from initdiag.yamlsource import Location

# A 2-D shape is a sequence [steps, features] or a conv feature map [channels, length]; the layer that
# makes it says which (its kind's `layout`), and the others keep their input's. A 2-D spec input is
# undecided until a layer reads its axes (its kind's `assumes_layout`: a layernorm reads the last as
# features, a batchnorm the first as channels).
KIND_NAMES = tuple(key for key, kind in LAYERS.items() if not kind.block)  # a block has its own grammar (residual)


class ActivationSpec(NamedTuple):
    name: str
    params: dict

    @property
    def display(self) -> str:
        return repr(activations.make(self.name, self.params))


class LayerSpec(NamedTuple):
    index: int
    name: str
    kind: str
    units: int  # output units: dense width, conv filters, channels of a pooling layer, features of a sequence
    fan_in: int | None  # PyTorch's fans of the weights (None without weights); the drawn matrix is (fan_in, units)
    activation: ActivationSpec
    init: InitSpec | None  # None for layers without weights
    bias: bool
    bias_init: object  # a number; an InitSpec (a scheme that fits a vector); None: not set (zero, or torch_default's own)
    location: Location | None
    fan_out: int | None = None  # dense: units; conv: filters · kernel area
    input_shape: tuple = ()  # one sample's
    output_shape: tuple = ()
    config: dict = {}  # the kind's own options, defaults filled (never mutated)
    recurrent_init: InitSpec | None = None  # rnn/lstm/gru: the hidden-to-hidden weights' scheme
    written_at: str = ""  # where in the spec, e.g. "layers[2].residual[0]"
    ignore: object = None  # validate.Ignore: finding codes this layer suppresses
    inputs: tuple = ()  # the layers it reads, by index (specgraph.INPUT: the spec's input); () = the layer above
    inits: dict = {}  # {parameter name: InitSpec}: per-parameter inits (paramspec)
    supplied: object = None  # supplied.Supplied: exact values of some parameters, from a file
    tie: object = None  # paramspec.Tie: a dense layer whose matrix is an embedding's table

    @property
    def path(self) -> str:
        return self.written_at or f"layers[{self.index}]"

    @property
    def matrix(self) -> tuple:
        """The shape of the weight matrix `init` draws: one column per unit (dense, conv filters);
        a recurrent layer's input weights have one per gate and unit, (features, gates · units)."""
        return (self.fan_in, self.fan_out if LAYERS[self.kind].params_dict else self.units)


def parse_activation(check: Checker, path: tuple, value) -> ActivationSpec | None:
    found = check.registered(path, value, activations.ACTIVATIONS, activations.ALIASES, "activation")
    if found is None:
        return None
    cls, params, params_path = found
    if params is not None and not isinstance(params, dict):
        check.problem(params_path, f"{cls.name} takes a mapping of parameters, not {check.show(params)}")
        return None
    values = dict(cls.params)
    for key, raw in (params or {}).items():
        if key not in cls.params:
            check.unknown_key(params_path + (key,), key, cls.params, f"{cls.name} parameter" if cls.params else f"parameter ({cls.name} takes none)")
            continue
        if key in cls.choices:  # a variant's name (gelu's approximate), not a number
            chosen = check.choice(params_path + (key,), raw, cls.choices[key], f"{cls.name} {key}")
            if chosen is not None:
                values[key] = chosen
            continue
        number = check.number(params_path + (key,), raw)
        if number is not None:
            values[key] = number
    return ActivationSpec(cls.name, values)


def parse_layers(check: Checker, data: dict, input_shape, default_init, default_activation, default_bias) -> tuple:
    """(layers, complete): the parsed layers in run order, and whether every one of them parsed (else the last one
    is not the network's output, and nothing about the output may be judged)."""
    raw_layers = data.get("layers")
    if raw_layers is None:
        check.problem((), "missing 'layers': a list such as [{dense: 256, activation: relu}, ...]")
        return [], False
    if not isinstance(raw_layers, list) or not raw_layers:
        what = "an empty list" if raw_layers == [] else check.show(raw_layers)
        check.problem(("layers",), f"expected a non-empty list of layers, not {what}")
        return [], False
    layers: list = []
    names: dict = {}
    graph, counter = Graph(input_shape), [0]
    _sequence(check, raw_layers, ("layers",), INPUT if input_shape is not None else None,
              (default_init, default_activation, default_bias), names, graph, layers, counter)
    complete = len(layers) == counter[0]
    graph.finish(check, layers, complete)
    paramspec.check_ties(check, layers, names)
    return layers, complete


def _layout(kind, layout, output_shape) -> str | None:
    """SEQUENCE or CHANNELS for a 2-D output of `kind` (a LayerKind) on an input of `layout`; None for
    other shapes and for a 2-D spec input that no layer has read yet."""
    if len(output_shape) != 2:
        return None
    return kind.layout or layout or kind.assumes_layout


def _kind_keys(raw: dict) -> list:
    """The keys of `raw` that name a layer kind (or an alias), as written; a mapping that names none but has an
    `activation` is a standalone activation layer (`- activation: relu`: the kind "activation")."""
    keys = [key for key in raw if isinstance(key, str) and key not in COMMON_KEYS
            and (key.strip().lower() in KIND_NAMES or key.strip().lower() in ALIASES)]
    return keys or [key for key in raw if key == "activation"]


def _sequence(check: Checker, raw_layers: list, list_path: tuple, source, defaults, names: dict, graph: Graph,
              layers: list, counter: list):
    """Parse the layers of `raw_layers` (the spec's, a residual block's or its shortcut's) into `layers`, in run
    order; `counter` numbers every layer, nested ones included. `source` is what the first layer reads by
    default (a layer index, INPUT, or None when unknown); returns the last layer's index (None if it failed)."""
    for position, raw in enumerate(raw_layers):
        path = list_path + (position,)
        if isinstance(raw, dict) and "residual" in raw:
            source = _residual(check, raw, path, source, defaults, names, graph, layers, counter)
            continue
        index = counter[0]
        counter[0] += 1
        if not isinstance(raw, dict):
            check.problem(path, f"expected a layer mapping such as {{dense: 256}}, not {check.show(raw)}")
            source = None
            continue
        written = _kind_keys(raw)
        if len(written) != 1:
            check.known_keys(path, raw, KIND_NAMES + tuple(ALIASES) + COMMON_KEYS + GRAPH_KEYS + ("residual",))
            found = " and ".join(written) if written else "none"
            check.problem(path, f"a layer names exactly one kind ({', '.join(KIND_NAMES + ('residual',))}); found {found}")
            source = None
            continue
        key = written[0]
        kind = LAYERS[lookup(key)]
        check.known_keys(path, raw, (key,) + kind.accepts + GRAPH_KEYS)
        name = _name(check, path, raw, f"{kind.key}_{index}", names)
        graph.declare(index, name, path)
        sources = graph.resolve(check, path, raw, source, name, index)
        shape, layout, joined = graph.input_of(check, path, kind, sources, named="inputs" in raw)
        geometry = _geometry(check, path + (key,), kind, raw[key], shape, layout, joined)
        activation, init, bias, bias_init, recurrent_init = _common(check, path, raw, kind, geometry, defaults)
        init, params = paramspec.parse(check, path, raw, kind, shape, geometry, init, bias, name)
        if geometry is None:
            source = None
            continue
        units, fan_in, fan_out, output_shape, config = geometry
        complete = init is not None or kind.weightless
        if "recurrent_init" in kind.takes:
            complete = complete and recurrent_init is not None
        if None not in (activation, name, bias) and complete:
            layers.append(LayerSpec(index, name, kind.key, units, fan_in, activation, init, bias, bias_init,
                                    check.doc.where(path), fan_out, shape, output_shape, config, recurrent_init,
                                    format_path(path), _ignore(check, path, raw), sources, **params))
            graph.built(index, sources, output_shape, _layout(kind, layout, output_shape))
            source = index
        else:
            source = None
    return source


def _common(check: Checker, path: tuple, raw: dict, kind, geometry, defaults) -> tuple:
    """(activation, init, bias, bias_init, recurrent_init) of a layer: what `kind.takes`, from `raw` or `defaults`."""
    default_init, default_activation, default_bias = defaults
    if kind.weightless:  # identity, but a standalone activation layer's is its own (in its config)
        config = geometry[4] if geometry else {}
        activation = _inner_activation(kind, config) if "activation" in config else ActivationSpec("identity", {})
        return activation, None, False, None, None
    if kind.inner_activation is not None:  # it acts inside the block (a cell, an FFN), from the kind's own options
        activation = _inner_activation(kind, geometry[4] if geometry else {})
        if not activations.make(activation.name, activation.params).elementwise:
            check.problem(path + (kind.key,), f"{activation.name} is not elementwise: a {kind.key} needs an elementwise activation")
            activation = None
        init = parse_init(check, path + ("init",), raw["init"]) if "init" in raw else default_init
        recurrent_init = None
        if "recurrent_init" in kind.takes:
            recurrent_init = parse_init(check, path + ("recurrent_init",), raw.get("recurrent_init", "orthogonal"))
        bias_init = paramspec.parse_bias_init(check, path + ("bias_init",), raw["bias_init"]) if "bias_init" in raw else default_bias
        return activation, init, "bias_init" in kind.takes, bias_init, recurrent_init
    activation = parse_activation(check, path + ("activation",), raw["activation"]) if "activation" in raw else default_activation
    init = parse_init(check, path + ("init",), raw["init"]) if "init" in raw else default_init
    bias = check.boolean(path + ("bias",), raw.get("bias", True)) if "bias" in kind.takes else (
        geometry[4].get("bias", True) if geometry else True)
    bias_init = paramspec.parse_bias_init(check, path + ("bias_init",), raw["bias_init"]) if "bias_init" in raw else default_bias
    if bias is False and "bias_init" in raw:
        check.problem(path + ("bias_init",), "bias_init is set but the layer has no bias")
    if activation is not None and kind.elementwise_activation and not activations.ACTIVATIONS[activation.name].elementwise:
        check.problem(path + ("activation",), f"{activation.name} is not elementwise: a {kind.key} layer needs an elementwise activation")
        activation = None
    return activation, init, bias, bias_init, None


def _ignore(check: Checker, path: tuple, raw: dict):
    return check.ignore(path + ("ignore",), raw["ignore"]) if "ignore" in raw else None


def _name(check: Checker, path: tuple, raw: dict, default: str, names: dict):
    name = check.string(path + ("name",), raw.get("name", default))
    if name in names:
        check.problem(path + ("name",), f"'{name}' is already the name of {names[name]}")
    if name == INPUT_NAME:
        check.problem(path + ("name",), f"'{INPUT_NAME}' names the spec's input (in other layers' inputs:): choose another name")
        return None
    names.setdefault(name, format_path(path))
    return name


RESIDUAL_KEYS = ("residual", "name", "scale", "shortcut", "ignore", "supplied") + GRAPH_KEYS
SHORTCUTS = next(option.choices for option in LAYERS["residual"].options if option.name == "shortcut")


def _residual(check: Checker, raw: dict, path: tuple, source, defaults, names: dict, graph: Graph, layers: list,
              counter: list):
    """`residual: [layers...]`: y = shortcut(x) + scale · f(x). Its inner layers come first in `layers`, then
    the shortcut's when it is a list of layers (a 1x1 conv and a batchnorm, as in ResNet), then a row for the
    block's output (kind "residual", reading (the branch's end, the skip: the block's input or the shortcut
    list's end); config["start"] = its first inner layer's index, config["sequence"]: the output is a
    sequence [steps, features], whose units are the last axis). Returns the block's index, as _sequence."""
    check.known_keys(path, raw, RESIDUAL_KEYS)
    inner = raw["residual"]
    if not isinstance(inner, list) or not inner:
        what = "an empty list" if inner == [] else check.show(inner)
        check.problem(path + ("residual",), f"expected a non-empty list of layers, not {what}")
        return None
    if "inputs" in raw:  # the block's input, named
        read = graph.resolve(check, path, raw, source, None, counter[0])
        if read is not None and len(read) != 1:
            check.problem(path + ("inputs",), f"a residual block reads one input, not {len(read)}")
            read = None
        source = read[0] if read is not None else None
    start = counter[0]
    branch_end = _sequence(check, inner, path + ("residual",), source, defaults, names, graph, layers, counter)
    shortcut = raw.get("shortcut")
    shortcut_end = None
    if isinstance(shortcut, list):
        if not shortcut:
            check.problem(path + ("shortcut",), "expected a non-empty list of layers (e.g. a 1x1 conv2d and a batchnorm), not an empty list")
            return None
        shortcut_end = _sequence(check, shortcut, path + ("shortcut",), source, defaults, names, graph, layers, counter)
    elif shortcut is not None:
        shortcut = check.choice(path + ("shortcut",), shortcut, SHORTCUTS, "shortcut")
    index = counter[0]
    counter[0] += 1
    name = _name(check, path, raw, f"residual_{index}", names)
    graph.declare(index, name, path)
    if name is not None:
        graph.reads[name] = [graph.name_of(i) for i in (branch_end, source if shortcut_end is None else shortcut_end) if i is not None]
    scale = check.number(path + ("scale",), raw.get("scale", 1.0))
    unknown = (source, branch_end) + ((shortcut_end,) if isinstance(shortcut, list) else ())
    if any(i is None or i not in graph.outputs for i in unknown) or name is None or scale is None:
        return None
    shape, layout = graph.outputs[source]
    out_shape, out_layout = graph.outputs[branch_end]
    config = {"start": start, "scale": scale, "shortcut": None if isinstance(shortcut, list) else shortcut, "stride": 1}
    fan_in = fan_out = init = None
    skip = source
    if isinstance(shortcut, list):
        skip = shortcut_end
        if graph.outputs[skip][0] != out_shape:
            check.problem(path + ("shortcut",), f"the shortcut's output {list(graph.outputs[skip][0])} differs from the "
                          f"block's {list(out_shape)}: the two are added")
            return None
    elif shortcut is None and out_shape != shape:
        check.problem(path, f"the block's output {list(out_shape)} differs from its input {list(shape)}: "
                      "add shortcut: dense (flat inputs), shortcut: conv (a 1x1 convolution) or a list of layers")
        return None
    if shortcut == "dense":
        if len(shape) != 1 or len(out_shape) != 1:
            check.problem(path + ("shortcut",), f"shortcut: dense needs flat input and output, not {list(shape)} → {list(out_shape)}")
            return None
        fan_in, fan_out = shape[0], out_shape[0]
    if shortcut == "conv":
        if out_layout == SEQUENCE:  # (a conv1d branch reads a sequence as [channels, length], and so does the shortcut)
            check.problem(path + ("shortcut",), f"shortcut: conv projects conv feature maps [channels, ...], but the "
                          f"block's layers end in a sequence [steps, features]: {list(shape)} → {list(out_shape)}")
            return None
        # a 1x1 convolution at stride s gives ceil(size / s) positions: s = ceil(size / out) if any s fits
        stride = -(-shape[1] // out_shape[1]) if len(shape) >= 2 and len(out_shape) == len(shape) and out_shape[1] else 0
        if not stride or any(-(-size // stride) != out for size, out in zip(shape[1:], out_shape[1:])):
            check.problem(path + ("shortcut",), f"shortcut: conv (1x1, strided) cannot map {list(shape)} to {list(out_shape)}; "
                          "a shortcut of another kernel or padding is a list of layers, e.g. [{conv2d: {...}}, {batchnorm: {}}]")
            return None
        # torch's fans of the Conv(in, out, kernel 1) weight (out, in, 1[, 1]): in and out channels
        fan_in, fan_out, config["stride"] = shape[0], out_shape[0], stride
        out_layout = CHANNELS if len(out_shape) == 2 else None
    if config["shortcut"] is not None:
        config["units"] = fan_out  # the projection's output width (the residual kind's declared weights read it)
        init = defaults[0]
        if init is None:
            return None
    config["sequence"] = out_layout == SEQUENCE
    units = out_shape[-1] if config["sequence"] else out_shape[0]  # features of a sequence, else channels (or width)
    sources = (branch_end, skip)
    # a projection shortcut's exact values (supplied: its `weights`)
    init, params = paramspec.parse(check, path, raw, LAYERS["residual"], shape, (units, fan_in, fan_out, out_shape, config),
                                   init, False, name)
    layers.append(LayerSpec(index, name, "residual", units, fan_in, ActivationSpec("identity", {}), init, False, None,
                            check.doc.where(path), fan_out, shape, out_shape, config, None, format_path(path),
                            _ignore(check, path, raw), sources, **params))
    graph.built(index, sources, out_shape, out_layout)
    return index


def _inner_activation(kind, config: dict) -> ActivationSpec:
    """The nonlinearity inside a recurrent cell or transformer block (shown, and matched against the
    rules of thumb: tanh RNN/LSTM → xavier, GELU transformer → xavier or relu, attention → xavier)."""
    written = config.get("activation", kind.inner_activation)
    if isinstance(written, dict):
        (name, params), = written.items()
        return ActivationSpec(name, dict(params))
    return ActivationSpec(written, {})


def _geometry(check: Checker, path: tuple, kind, value, shape, layout=None, joined=None):
    """(units, fan_in, fan_out, output shape, config) of a layer of `kind` (a LayerKind, written at `path`)
    on inputs of `shape` (a 2-D one laid out as `layout`); None, and a located problem, when its options
    or its input's shape do not work. The fans are its first weight matrix's (None without weights)."""
    config = kind.parse(check, path, value)
    if config is None or shape is None:
        return None
    if joined:  # a merge: its inputs' shapes and names (specgraph.Graph.input_of)
        config = {**config, **joined}
    if kind.reads_layout:  # whether its input is a sequence: pooled over its steps, a dense applied per token
        config = {**config, "sequence": (layout or kind.assumes_layout) == SEQUENCE}
    try:
        output_shape = kind.shape_of(shape, config)
    except InputError as err:
        check.problem(path, str(err))
        return None
    except ValueError as err:
        check.problem(path, f"{err} (input {list(shape)})")
        return None
    weights = kind.weights(shape, config) if kind.weights else {}
    fan_in, fan_out = next(iter(weights.values())).fans if weights else (None, None)
    # a sequence's units are its features (the last axis) for the kinds that keep what they read (an activation
    # layer, a layer scale, a merge), whose declared unit axis is a feature map's channels
    per_token = (kind.rescales or kind.joins) and layout == SEQUENCE and len(output_shape) == 2
    return (output_shape[-1] if per_token else kind.units(output_shape, config)), fan_in, fan_out, output_shape, config
