"""The spec: a YAML description of a network, parsed and validated into plain frozen data.

Every problem is collected with the place it was written, so one run reports all the
independent problems of a spec at once. Nothing here allocates a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from initdiag import paramspec, yamlsource
from initdiag.initspec import InitSpec, parse_init
from initdiag.layers import LAYERS
from initdiag.speclayers import LayerSpec, parse_activation, parse_layers  # noqa: F401  (LayerSpec: re-exported)
from initdiag.validate import Checker
from initdiag.yamlsource import Document, SpecErrors, SpecProblem

TOP_KEYS = ("name", "input", "batch", "seed", "dtype", "input_distribution", "loss", "fans", "defaults", "layers",
            "thresholds", "ignore")
DEFAULT_KEYS = ("init", "activation", "bias_init")
DTYPES = ("float32", "float64")
INPUT_DISTRIBUTIONS = ("normal", "uniform", "tokens")
LOSSES = ("auto", "mse", "cross_entropy", "binary_cross_entropy", "unit")
FANS = ("torch", "dl4j")  # whose conv fans the schemes read: PyTorch's (and Keras'), or Deeplearning4j's
DEFAULT_BATCH = 256


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
    eval: bool = False
    thresholds: tuple = ()  # validate.Written: the spec's own threshold overrides, as written (checks.spec_thresholds)
    ignore: object = None  # validate.Ignore: finding codes suppressed everywhere in this spec  # run as at inference: dropout off, batchnorm on its initial running statistics

    def with_init(self, init: InitSpec) -> "NetworkSpec":
        """Every layer's weight matrices drawn by `init` (as `check --scheme`; paramspec.reinitialized: supplied and
        per-parameter matrices too, a tied one stays tied)."""
        layers = tuple(paramspec.reinitialized(layer, init) for layer in self.layers)
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
    fans = check.choice(("fans",), data.get("fans", "torch"), FANS, "fans")
    distribution, batch = _input_distribution(check, data, input_shape, batch)

    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        check.problem(("defaults",), f"expected a mapping of {', '.join(DEFAULT_KEYS)}, not {check.type_name(defaults)}")
        defaults = {}
    check.known_keys(("defaults",), defaults, DEFAULT_KEYS)
    default_init = parse_init(check, ("defaults", "init"), defaults.get("init", "xavier"))
    default_activation = parse_activation(check, ("defaults", "activation"), defaults.get("activation", "identity"))
    default_bias = paramspec.parse_bias_init(check, ("defaults", "bias_init"), defaults["bias_init"]) if "bias_init" in defaults else None

    layers, complete = parse_layers(check, data, input_shape, default_init, default_activation, default_bias)
    if fans == "dl4j":
        layers = [_dl4j_fans(layer) for layer in layers]
    tokens = distribution == "tokens"
    for layer in layers:
        reads_tokens = LAYERS[layer.kind].reads_tokens
        if reads_tokens != (tokens and layer.index == 0):
            message = (f"an {layer.kind} layer must come first, on input_distribution: tokens" if reads_tokens
                       else "input_distribution: tokens (integer ids) needs an embedding layer first")
            check.problem(("layers", layer.index), message)
            break
    if loss == "cross_entropy" and complete and len(layers[-1].output_shape) != 1 and not _per_token(layers[-1]):
        check.problem(("loss",), f"cross_entropy needs a flat [classes] output (or a sequence's [steps, classes]), but the last layer's is "
                      f"{list(layers[-1].output_shape)}: end with flatten or global_avgpool and a dense layer")
    thresholds = _thresholds(check, data.get("thresholds", {}))
    ignore = check.ignore(("ignore",), data["ignore"]) if "ignore" in data else None
    spec = NetworkSpec(doc.file, name, input_shape, batch, seed, dtype, distribution, loss, tuple(layers),
                       thresholds=thresholds, ignore=ignore)
    problems = check.problems + shape_problems(spec)
    if problems:
        raise SpecErrors(sorted(problems, key=_position), pending=check.pending)
    return spec


def _dl4j_fans(layer: LayerSpec) -> LayerSpec:
    """A conv layer with Deeplearning4j's fans (ConvolutionParamInitializer: fan_out = filters · kernel area /
    stride area); the other layers as they are. The conv kind reads the rule from its config (conv.Conv.fans)."""
    if layer.kind not in ("conv1d", "conv2d"):
        return layer
    config = {**layer.config, "fans": "dl4j"}
    fan_out = LAYERS[layer.kind].cls.fans(layer.input_shape, config)[1]
    return layer._replace(config=config, fan_out=fan_out)


def _per_token(layer) -> bool:
    """Whether the layer's output is a sequence [steps, classes] (a per-token dense, a sequence layer)."""
    return len(layer.output_shape) == 2 and (LAYERS[layer.kind].layout == "sequence" or bool(layer.config.get("sequence")))


def _thresholds(check: Checker, value) -> tuple:
    """The `thresholds:` entries as written: their names and values are checked where the thresholds are
    declared (checks.spec_problems), which this stage does not import."""
    if not isinstance(value, dict):
        check.problem(("thresholds",), f"expected a mapping such as {{dead_warning: 0.2}}, not {check.show(value)}")
        return ()
    return tuple(check.written(("thresholds", key), key, number) for key, number in value.items())


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


def shape_problems(spec: NetworkSpec) -> list[SpecProblem]:
    """Inits that cannot fill their layer's weights (schemes.problem on each weightgeometry): a role the
    scheme does not take, identity on a non-square layer, a supplied array of the wrong shape. One per layer."""
    from initdiag import weightgeometry

    problems = []
    for layer in spec.layers:
        if layer.init is None:
            continue
        message = None
        for j, (name, geometry) in enumerate(weightgeometry.weights(layer).items()):
            init = paramspec.drawn_by(layer, name, j)
            message = init.shape_problem(geometry) if init is not None else None
            if message:
                message += f" ({name})" if j else ""
                break
        if layer.recurrent_init is not None and not message:
            message = layer.recurrent_init.shape_problem(weightgeometry.recurrent(layer))
            if message:
                problems.append(SpecProblem(layer.recurrent_init.location, f"{layer.path}.recurrent_init",
                                            f"{message} (the recurrent weights are units × gates·units)", file=spec.file))
                continue
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
