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
from initdiag.validate import Checker, format_path
from initdiag.yamlsource import Document, Location, SpecErrors, SpecProblem

TOP_KEYS = ("name", "input", "batch", "seed", "dtype", "input_distribution", "loss", "defaults", "layers")
DEFAULT_KEYS = ("init", "activation", "bias_init")
CONV_KINDS = ("conv1d", "conv2d")
RECURRENT_KINDS = ("rnn", "lstm", "gru")
ATTENTION_KINDS = ("attention", "transformer")
MULTI_KINDS = RECURRENT_KINDS + ATTENTION_KINDS + ("embedding",)  # several weight matrices; `init` draws them all but the recurrent ones
NORM_KINDS = ("batchnorm", "layernorm", "dropout")  # fixed parameters (gamma 1, beta 0): nothing to initialise
WEIGHTLESS_KINDS = ("maxpool2d", "avgpool2d", "global_avgpool", "flatten") + NORM_KINDS
LAYER_KINDS = ("dense",) + CONV_KINDS + MULTI_KINDS + WEIGHTLESS_KINDS
# The keys each kind takes beside its own (conv biases are switched in the conv's own options).
KIND_KEYS = {"dense": ("name", "activation", "init", "bias_init", "bias")}
KIND_KEYS.update({kind: ("name", "activation", "init", "bias_init") for kind in CONV_KINDS})
KIND_KEYS.update({kind: ("name",) for kind in WEIGHTLESS_KINDS})
KIND_KEYS.update({kind: ("name", "init", "recurrent_init", "bias_init") for kind in RECURRENT_KINDS})
KIND_KEYS.update({kind: ("name", "init", "bias_init") for kind in ATTENTION_KINDS})
KIND_KEYS["embedding"] = ("name", "init")
LAYER_KEYS = LAYER_KINDS + KIND_KEYS["dense"]
DTYPES = ("float32", "float64")
INPUT_DISTRIBUTIONS = ("normal", "uniform", "tokens")
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
    units: int  # output units: dense width, conv filters, channels of a pooling layer
    fan_in: int | None  # PyTorch's fans of the weights (None without weights); the drawn matrix is (fan_in, units)
    activation: ActivationSpec
    init: InitSpec | None  # None for layers without weights
    bias: bool
    bias_init: float | None  # None: not set anywhere (zero, or torch_default's own bias)
    location: Location | None
    fan_out: int | None = None  # dense: units; conv: filters · kernel area
    input_shape: tuple = ()  # one sample's
    output_shape: tuple = ()
    config: dict = {}  # the kind's own options, defaults filled (never mutated)
    recurrent_init: InitSpec | None = None  # rnn/lstm/gru: the hidden-to-hidden weights' scheme
    written_at: str = ""  # where in the spec, e.g. "layers[2].residual[0]"

    @property
    def path(self) -> str:
        return self.written_at or f"layers[{self.index}]"

    @property
    def matrix(self) -> tuple:
        """The shape of the weight matrix `init` draws: one column per unit (dense, conv filters);
        a recurrent layer's input weights have one per gate and unit, (features, gates · units)."""
        return (self.fan_in, self.fan_out if self.kind in MULTI_KINDS else self.units)


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
    eval: bool = False  # run as at inference: dropout off, batchnorm on its initial running statistics

    def with_init(self, init: InitSpec) -> "NetworkSpec":
        """Every layer's weight init replaced by `init` (as `check --scheme`)."""
        layers = tuple(layer._replace(init=init) if layer.init is not None else layer for layer in self.layers)
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
    tokens = distribution == "tokens"
    for layer in layers:
        if (layer.kind == "embedding") != (tokens and layer.index == 0):
            message = ("an embedding layer must come first, on input_distribution: tokens" if layer.kind == "embedding"
                       else "input_distribution: tokens (integer ids) needs an embedding layer first")
            check.problem(("layers", layer.index), message)
            break
    if loss == "cross_entropy" and layers and len(layers[-1].output_shape) != 1:
        check.problem(("loss",), f"cross_entropy needs a flat [classes] output, but the last layer's is "
                      f"{list(layers[-1].output_shape)}: end with flatten or global_avgpool and a dense layer")
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
    if not isinstance(value, list) or not 1 <= len(value) <= 3:
        check.problem(("input",), "expected the shape of one sample: [features], [channels, length] or "
                      f"[channels, height, width], e.g. [784] or [3, 32, 32], not {check.show(value)}")
        return None
    sizes = [check.integer(("input", i), size, minimum=1) for i, size in enumerate(value)]
    return None if None in sizes else tuple(sizes)


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
    layers: list = []
    _sequence(check, raw_layers, ("layers",), input_shape, (default_init, default_activation, default_bias), {}, layers, [0])
    return layers


def _sequence(check: Checker, raw_layers: list, list_path: tuple, shape, defaults, names: dict, layers: list, counter: list):
    """Parse the layers of `raw_layers` (the spec's, or a residual block's) into `layers`, in run order;
    `counter` numbers every layer, nested ones included. Returns the shape after them (None if unknown)."""
    default_init, default_activation, default_bias = defaults
    for position, raw in enumerate(raw_layers):
        path = list_path + (position,)
        if isinstance(raw, dict) and "residual" in raw:
            shape = _residual(check, raw, path, shape, defaults, names, layers, counter)
            continue
        index = counter[0]
        counter[0] += 1
        if not isinstance(raw, dict):
            check.problem(path, f"expected a layer mapping such as {{dense: 256}}, not {check.show(raw)}")
            shape = None
            continue
        kinds = [key for key in LAYER_KINDS if key in raw]
        if len(kinds) != 1:
            check.known_keys(path, raw, LAYER_KEYS + ("residual",))
            found = " and ".join(kinds) if kinds else "none"
            check.problem(path, f"a layer names exactly one kind ({', '.join(LAYER_KINDS + ('residual',))}); found {found}")
            shape = None
            continue
        kind = kinds[0]
        check.known_keys(path, raw, (kind,) + KIND_KEYS[kind])
        name = _name(check, path, raw, f"{kind}_{index}", names)
        geometry = _geometry(check, path, kind, raw[kind], shape)
        recurrent_init = None
        if kind in WEIGHTLESS_KINDS:
            activation, init, bias, bias_init = ActivationSpec("identity", {}), None, False, None
        elif kind in MULTI_KINDS:
            activation = _inner_activation(kind, geometry[4] if geometry else {})  # acts inside the block
            if not activations.make(activation.name, activation.params).elementwise:
                check.problem(path + (kind,), f"{activation.name} is not elementwise: a {kind} needs an elementwise activation")
                activation = None
            init = parse_init(check, path + ("init",), raw["init"]) if "init" in raw else default_init
            if kind in RECURRENT_KINDS:
                recurrent_init = parse_init(check, path + ("recurrent_init",), raw.get("recurrent_init", "orthogonal"))
            bias = kind != "embedding"
            bias_init = check.number(path + ("bias_init",), raw["bias_init"]) if "bias_init" in raw else default_bias
        else:
            activation = _activation(check, path + ("activation",), raw["activation"]) if "activation" in raw else default_activation
            init = parse_init(check, path + ("init",), raw["init"]) if "init" in raw else default_init
            bias = check.boolean(path + ("bias",), raw.get("bias", True)) if kind == "dense" else (
                geometry[4].get("bias", True) if geometry else True)
            bias_init = check.number(path + ("bias_init",), raw["bias_init"]) if "bias_init" in raw else default_bias
            if bias is False and "bias_init" in raw:
                check.problem(path + ("bias_init",), "bias_init is set but the layer has no bias")
            if activation is not None and kind in CONV_KINDS and not activations.ACTIVATIONS[activation.name].elementwise:
                check.problem(path + ("activation",), f"{activation.name} is not elementwise: a {kind} layer needs an elementwise activation")
                activation = None
        if geometry is None:
            shape = None
            continue
        units, fan_in, fan_out, output_shape, config = geometry
        complete = init is not None or kind in WEIGHTLESS_KINDS
        if kind in RECURRENT_KINDS:
            complete = complete and recurrent_init is not None
        if None not in (activation, name, bias) and complete:
            layers.append(LayerSpec(index, name, kind, units, fan_in, activation, init, bias, bias_init,
                                    check.doc.where(path), fan_out, shape, output_shape, config, recurrent_init,
                                    format_path(path)))
        shape = output_shape
    return shape


def _name(check: Checker, path: tuple, raw: dict, default: str, names: dict):
    name = check.string(path + ("name",), raw.get("name", default))
    if name in names:
        check.problem(path + ("name",), f"'{name}' is already the name of {names[name]}")
    names.setdefault(name, format_path(path))
    return name


RESIDUAL_KEYS = ("residual", "name", "scale", "shortcut")
SHORTCUTS = ("dense", "conv")


def _residual(check: Checker, raw: dict, path: tuple, shape, defaults, names: dict, layers: list, counter: list):
    """`residual: [layers...]`: y = shortcut(x) + scale · f(x). Its inner layers come first in `layers`,
    then a row for the block's output (kind "residual", config["start"] = its first inner layer's index)."""
    check.known_keys(path, raw, RESIDUAL_KEYS)
    inner = raw["residual"]
    if not isinstance(inner, list) or not inner:
        what = "an empty list" if inner == [] else check.show(inner)
        check.problem(path + ("residual",), f"expected a non-empty list of layers, not {what}")
        return None
    start = counter[0]
    out_shape = _sequence(check, inner, path + ("residual",), shape, defaults, names, layers, counter)
    index = counter[0]
    counter[0] += 1
    name = _name(check, path, raw, f"residual_{index}", names)
    scale = check.number(path + ("scale",), raw.get("scale", 1.0))
    shortcut = raw.get("shortcut")
    if shortcut is not None:
        shortcut = check.choice(path + ("shortcut",), shortcut, SHORTCUTS, "shortcut")
    if shape is None or out_shape is None or name is None or scale is None:
        return None
    config = {"start": start, "scale": scale, "shortcut": shortcut, "stride": 1}
    fan_in = fan_out = init = None
    if shortcut is None and out_shape != shape:
        check.problem(path, f"the block's output {list(out_shape)} differs from its input {list(shape)}: "
                      "add shortcut: dense (flat inputs) or shortcut: conv (a 1x1 convolution)")
        return None
    if shortcut == "dense":
        if len(shape) != 1 or len(out_shape) != 1:
            check.problem(path + ("shortcut",), f"shortcut: dense needs flat input and output, not {list(shape)} → {list(out_shape)}")
            return None
        fan_in, fan_out = shape[0], out_shape[0]
    if shortcut == "conv":
        stride = shape[1] // out_shape[1] if len(shape) >= 2 and len(out_shape) == len(shape) and out_shape[1] else 0
        if not stride or any(-(-size // stride) != out for size, out in zip(shape[1:], out_shape[1:])):
            check.problem(path + ("shortcut",), f"shortcut: conv (1x1, strided) cannot map {list(shape)} to {list(out_shape)}")
            return None
        fan_in, fan_out, config["stride"] = shape[0], out_shape[0], stride
    if shortcut is not None:
        init = defaults[0]
        if init is None:
            return None
    layers.append(LayerSpec(index, name, "residual", out_shape[0] if len(out_shape) != 2 else out_shape[-1], fan_in,
                            ActivationSpec("identity", {}), init, False, None, check.doc.where(path), fan_out, shape,
                            out_shape, config, None, format_path(path)))
    return out_shape


def _inner_activation(kind: str, config: dict) -> ActivationSpec:
    """The nonlinearity inside a recurrent cell or transformer block (shown, and matched against the
    rules of thumb: tanh RNN/LSTM → xavier, GELU transformer → xavier or relu, attention → xavier)."""
    written = config.get("activation", "tanh" if kind in RECURRENT_KINDS else "identity")
    if isinstance(written, dict):
        (name, params), = written.items()
        return ActivationSpec(name, dict(params))
    return ActivationSpec(written, {})


def _geometry(check: Checker, path: tuple, kind: str, value, shape):
    """(units, fan_in, fan_out, output shape, config) of a layer of `kind` on inputs of `shape`;
    None, and a located problem, when its options or its input's shape do not work."""
    from initdiag.layers import layer_class

    if kind == "dense":
        units = check.integer(path + (kind,), value, minimum=1, what="width")
        if units is None or shape is None:
            return None
        if len(shape) != 1:
            check.problem(path + (kind,), f"dense takes a flat input [features], but its input is "
                          f"{list(shape)}: add a layer '- flatten: {{}}' (or global_avgpool) before it")
            return None
        return units, shape[0], units, (units,), {"units": units}
    kind_class = layer_class(kind)
    try:
        if kind in NORM_KINDS or kind == "embedding":
            from initdiag.layers_norm import normalize_config
        elif kind in RECURRENT_KINDS:
            from initdiag.layers_recurrent import normalize_config
        elif kind in ATTENTION_KINDS:
            from initdiag.layers_attention import normalize_config
        else:
            from initdiag.layers_conv import normalize_config

        config = normalize_config(kind, value if value not in (None, True) else {})
    except ValueError as err:
        check.problem(path + (kind,), str(err))
        return None
    if shape is None:
        return None
    try:
        output_shape = tuple(kind_class.output_shape(shape, config))
    except ValueError as err:
        check.problem(path + (kind,), f"{err} (input {list(shape)})")
        return None
    if kind in NORM_KINDS:
        return output_shape[kind_class.unit_axis - 1 if kind_class.unit_axis > 0 else -1], None, None, output_shape, config
    if kind in MULTI_KINDS:  # the first weight matrix (input / query weights) stands for the layer
        fan_in, fan_out = next(iter(kind_class.fans(shape, config).values()))
        return output_shape[-1], fan_in, fan_out, output_shape, config
    fans = kind_class.fans(shape, config)
    if fans is None:
        return output_shape[0], None, None, output_shape, config
    return config["filters"], fans[0], fans[1], output_shape, config


def shape_problems(spec: NetworkSpec) -> list[SpecProblem]:
    """Inits that cannot fit their layer's shape: identity on a non-square layer, a supplied array of the wrong shape."""
    from initdiag.layers import layer_class

    problems = []
    for layer in spec.layers:
        if layer.init is None:
            continue
        message = layer.init.shape_problem(layer.matrix)
        if layer.recurrent_init is not None and not message:
            recurrent_shape = (layer.units, layer.fan_out)
            message = layer.recurrent_init.shape_problem(recurrent_shape)
            if message:
                problems.append(SpecProblem(layer.recurrent_init.location, f"{layer.path}.recurrent_init",
                                            f"{message} (the recurrent weights are units × gates·units)", file=spec.file))
                continue
        if layer.kind in CONV_KINDS and layer.init.scheme == "identity":
            try:
                layer_class(layer.kind).identity_weights(layer.input_shape, layer.config, np.float32)
                message = None
            except ValueError as err:
                message = f"identity (the Dirac kernel) on {layer.kind}: {err}"
        if message:
            where = f"{layer.path}.init" + ("" if layer.init.path.startswith("layers") else f" (from {layer.init.path})")
            problems.append(SpecProblem(layer.init.location, where, message, file=spec.file))
    return problems


def input_batch(spec: NetworkSpec, rng: np.random.Generator) -> np.ndarray:
    """The (batch, features) input: drawn from the spec's distribution, or the supplied .npy batch."""
    from initdiag import sampling

    dtype = np.dtype(spec.dtype)
    shape = (spec.batch,) + spec.input_shape
    if spec.input_distribution == "tokens":  # ids drawn uniformly from the first (embedding) layer's vocabulary
        return rng.integers(0, spec.layers[0].config["vocab"], size=shape, dtype=np.int64)
    if spec.input_distribution == "normal":
        return sampling.standard_normal(rng, shape, dtype)
    if spec.input_distribution == "uniform":
        return sampling.standard_uniform(rng, shape, dtype)
    return np.load(spec.input_distribution, allow_pickle=False).astype(dtype)
