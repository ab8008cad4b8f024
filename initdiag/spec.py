"""The spec: a YAML description of a network, parsed and validated into plain frozen data.

Every problem is collected with the place it was written, so one run reports all the
independent problems of a spec at once. Nothing here allocates a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from initdiag import activations, yamlsource
from initdiag.initspec import InitSpec, parse_init
from initdiag.validate import Checker
from initdiag.yamlsource import Document, Location, SpecErrors, SpecProblem

TOP_KEYS = ("name", "input", "batch", "seed", "dtype", "input_distribution", "loss", "defaults", "layers")
DEFAULT_KEYS = ("init", "activation", "bias_init")
LAYER_KINDS = ("dense",)
LAYER_KEYS = LAYER_KINDS + ("name", "activation", "init", "bias_init", "bias")
DTYPES = ("float32", "float64")
INPUT_DISTRIBUTIONS = ("normal", "uniform")
LOSSES = ("auto", "mse", "cross_entropy", "binary_cross_entropy", "unit")
DEFAULT_BATCH = 256


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
    units: int
    fan_in: int
    activation: ActivationSpec
    init: InitSpec
    bias: bool
    bias_init: float | None  # None: not set anywhere (zero, or torch_default's own bias)
    location: Location | None

    @property
    def path(self) -> str:
        return f"layers[{self.index}]"


class NetworkSpec(NamedTuple):
    file: str  # as the user named it, for messages
    name: str
    input_shape: tuple
    batch: int
    seed: int
    dtype: str
    input_distribution: str  # normal | uniform | a resolved .npy path
    loss: str
    layers: tuple
    scheme_override: InitSpec | None = None

    def with_init(self, init: InitSpec) -> "NetworkSpec":
        """Every layer's weight init replaced by `init` (as `check --scheme`)."""
        layers = tuple(layer._replace(init=init) for layer in self.layers)
        spec = self._replace(layers=layers, scheme_override=init)
        problems = shape_problems(spec)
        if problems:
            raise SpecErrors(problems)
        return spec

    def with_seed(self, seed: int) -> "NetworkSpec":
        return self._replace(seed=seed)


def load(path, allow_custom: bool = False, shown_as: str | None = None) -> NetworkSpec:
    """Read and validate a spec file. Raises SpecErrors listing every problem found."""
    shown = shown_as or str(path)
    try:
        doc = yamlsource.load(Path(path), shown)
    except SpecProblem as problem:
        raise SpecErrors([problem]) from None
    return parse(doc, Path(path).resolve().parent, Path(path).stem, allow_custom)


def parse(doc: Document, base_dir: Path, default_name: str, allow_custom: bool = False) -> NetworkSpec:
    check = Checker(doc, base_dir, allow_custom)
    data = doc.data
    if not isinstance(data, dict):
        check.problem((), f"a spec is a mapping with 'input' and 'layers', not {check.type_name(data)}")
        raise SpecErrors(check.problems)
    check.known_keys((), data, TOP_KEYS)
    name = check.string(("name",), data.get("name", default_name))
    input_shape = _input_shape(check, data)
    batch = check.integer(("batch",), data.get("batch", DEFAULT_BATCH), minimum=1)
    seed = check.integer(("seed",), data.get("seed", 0), minimum=0)
    dtype = check.choice(("dtype",), data.get("dtype", "float32"), DTYPES, "dtype")
    loss = check.choice(("loss",), data.get("loss", "auto"), LOSSES, "loss")
    distribution, batch = _input_distribution(check, data, input_shape, batch)

    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        check.problem(("defaults",), f"expected a mapping of {', '.join(DEFAULT_KEYS)}, not {check.type_name(defaults)}")
        defaults = {}
    check.known_keys(("defaults",), defaults, DEFAULT_KEYS)
    default_init = parse_init(check, ("defaults", "init"), defaults.get("init", "xavier"))
    default_activation = _activation(check, ("defaults", "activation"), defaults.get("activation", "identity"))
    default_bias = check.number(("defaults", "bias_init"), defaults["bias_init"]) if "bias_init" in defaults else None

    layers = _layers(check, data, input_shape, default_init, default_activation, default_bias)
    spec = NetworkSpec(doc.file, name, input_shape, batch, seed, dtype, distribution, loss, tuple(layers))
    problems = check.problems + shape_problems(spec)
    if problems:
        raise SpecErrors(sorted(problems, key=_position))
    return spec


def _position(problem: SpecProblem) -> tuple:
    where = problem.location
    return (where.line, where.column) if where else (0, 0)


def _input_shape(check: Checker, data: dict) -> tuple | None:
    if "input" not in data:
        check.problem((), "missing 'input': the shape of one sample, e.g. input: [784]")
        return None
    value = data["input"]
    if not isinstance(value, list) or len(value) != 1:
        check.problem(("input",), f"expected the shape of one sample as a one-element list like [784], not {check.show(value)}")
        return None
    features = check.integer(("input", 0), value[0], minimum=1)
    return None if features is None else (features,)


def _input_distribution(check: Checker, data: dict, input_shape, batch):
    value = data.get("input_distribution", "normal")
    path = ("input_distribution",)
    if not isinstance(value, str):
        check.problem(path, f"expected normal, uniform or a path to a .npy batch, not {check.show(value)}")
        return "normal", batch
    if value.lower() in INPUT_DISTRIBUTIONS:
        return value.lower(), batch
    if not value.endswith(".npy"):
        check.choice(path, value, INPUT_DISTRIBUTIONS + ("<path>.npy",), "input_distribution")
        return "normal", batch
    array = check.npy(path, value)
    if array is None or input_shape is None:
        return value, batch
    expected = ("N",) + input_shape
    if array.ndim != len(expected) or array.shape[1:] != input_shape:
        check.problem(path, f"the batch has shape {list(array.shape)}, expected [batch, {', '.join(map(str, input_shape))}]")
    elif "batch" in data and batch is not None and array.shape[0] != batch:
        check.problem(path, f"the batch holds {array.shape[0]} samples but 'batch' is {batch}; drop 'batch' or make them agree")
    elif array.shape[0] == 0:
        check.problem(path, "the batch is empty")
    elif not np.isfinite(array).all():
        check.problem(path, "the batch holds NaN or infinite values")
    else:
        batch = array.shape[0]
    return str(check.resolve(value)), batch


def _activation(check: Checker, path: tuple, value) -> ActivationSpec | None:
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
        number = check.number(params_path + (key,), raw)
        if number is not None:
            values[key] = number
    return ActivationSpec(cls.name, values)


def _layers(check: Checker, data: dict, input_shape, default_init, default_activation, default_bias) -> list:
    raw_layers = data.get("layers")
    if raw_layers is None:
        check.problem((), "missing 'layers': a list such as [{dense: 256, activation: relu}, ...]")
        return []
    if not isinstance(raw_layers, list) or not raw_layers:
        what = "an empty list" if raw_layers == [] else check.show(raw_layers)
        check.problem(("layers",), f"expected a non-empty list of layers, not {what}")
        return []
    layers, names = [], {}
    fan_in = input_shape[0] if input_shape else None
    for index, raw in enumerate(raw_layers):
        path = ("layers", index)
        if not isinstance(raw, dict):
            check.problem(path, f"expected a layer mapping such as {{dense: 256}}, not {check.show(raw)}")
            fan_in = None
            continue
        check.known_keys(path, raw, LAYER_KEYS)
        kinds = [key for key in LAYER_KINDS if key in raw]
        if len(kinds) != 1:
            found = " and ".join(kinds) if kinds else "none"
            check.problem(path, f"a layer names exactly one kind ({', '.join(LAYER_KINDS)}); found {found}")
            fan_in = None
            continue
        kind = kinds[0]
        units = check.integer(path + (kind,), raw[kind], minimum=1, what="width")
        name = check.string(path + ("name",), raw.get("name", f"{kind}_{index}"))
        if name in names:
            check.problem(path + ("name",), f"'{name}' is already the name of layers[{names[name]}]")
        names.setdefault(name, index)
        activation = _activation(check, path + ("activation",), raw["activation"]) if "activation" in raw else default_activation
        init = parse_init(check, path + ("init",), raw["init"]) if "init" in raw else default_init
        bias = check.boolean(path + ("bias",), raw.get("bias", True))
        bias_init = check.number(path + ("bias_init",), raw["bias_init"]) if "bias_init" in raw else default_bias
        if bias is False and "bias_init" in raw:
            check.problem(path + ("bias_init",), "bias_init is set but the layer has bias: false")
        if None not in (units, fan_in, activation, init, name, bias):
            location = check.doc.where(path)
            layers.append(LayerSpec(index, name, kind, units, fan_in, activation, init, bias, bias_init, location))
        fan_in = units
    return layers


def shape_problems(spec: NetworkSpec) -> list[SpecProblem]:
    """Inits that cannot fit their layer's shape: identity on a non-square layer, a supplied array of the wrong shape."""
    problems = []
    for layer in spec.layers:
        shape = (layer.fan_in, layer.units)
        message = layer.init.shape_problem(shape)
        if message:
            where = f"{layer.path}.init" + ("" if layer.init.path.startswith("layers") else f" (from {layer.init.path})")
            problems.append(SpecProblem(layer.init.location, where, message, file=spec.file))
    return problems


def input_batch(spec: NetworkSpec, rng: np.random.Generator) -> np.ndarray:
    """The (batch, features) input: drawn from the spec's distribution, or the supplied .npy batch."""
    from initdiag import sampling

    dtype = np.dtype(spec.dtype)
    shape = (spec.batch,) + spec.input_shape
    if spec.input_distribution == "normal":
        return sampling.standard_normal(rng, shape, dtype)
    if spec.input_distribution == "uniform":
        return sampling.standard_uniform(rng, shape, dtype)
    return np.load(spec.input_distribution, allow_pickle=False).astype(dtype)
