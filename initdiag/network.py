"""Build a network from a validated spec: estimate its memory, then draw every layer's parameters.

Random numbers: one independent numpy stream per layer's weights and per layer's biases,
and one each for the input batch and the loss targets, all derived from the spec's seed
through SeedSequence spawn keys. The same spec and seed give the same numbers, and changing
one layer leaves every other layer's draws unchanged. A layer without an `init` matrix may
draw a value of its own from its (otherwise unused) weight stream: a class token does.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from initdiag import activations, paramspec, sampling, schemes, supplied, weightgeometry
from initdiag import layers as layer_kinds
from initdiag.initspec import InitSpec
from initdiag.spec import LayerSpec, NetworkSpec, input_batch
from initdiag.yamlsource import SpecErrors, SpecProblem

STREAM_INPUT, STREAM_TARGETS, STREAM_WEIGHTS, STREAM_BIAS, STREAM_DROPOUT, STREAM_RECURRENT, STREAM_BLOCK, STREAM_PROBE, STREAM_PARAM = range(9)
DEFAULT_MEMORY_FRACTION = 0.5
PARALLEL_DRAWS = 2_000_000  # weights; below this, starting threads costs more than it saves


def stream(seed: int, kind: int, index: int = 0, *more: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, index, *more)))


class Network(NamedTuple):
    spec: NetworkSpec
    layers: list
    inputs: np.ndarray  # (batch, features)
    target_rng: np.random.Generator


class MemoryEstimate(NamedTuple):
    total: int  # bytes
    largest_layer: LayerSpec  # the layer with the most parameters (else the largest output)
    largest_bytes: int  # its parameters' bytes (its output's, for a network without parameters)
    largest_shape: tuple = ()  # its main parameter's shape as the layer holds it ((vocab, dim) for an embedding)


RUN_OVERHEAD = 1_000_000  # bytes of Python objects a run holds besides its arrays (spec, report, statistics)
CONTRAST_COPIES = 8  # float64 copies of the contrast probe's features (probes._near_far: x, near, centred, unit, ...)
CONTRAST_SAMPLES = 96  # probes.CONTRAST_SAMPLES (a later stage: not imported here; tests/test_memory.py keeps them equal)


def estimate_memory(spec: NetworkSpec) -> MemoryEstimate:
    """Bytes a run holds at its peak, an upper bound: what is alive when the backward pass starts, or during the
    probes' extra forward passes, whichever is more.

    Alive from the build to the end: every parameter at its real shape (an embedding's table twice: the drawn
    (dim, vocab) matrix its statistics read and the (vocab, dim) copy it looks up) and the input batch. After the
    forward pass: every layer's output, its pre-activation (a layer with an activation, a normalization's x̂) and
    what its kind declares its cache keeps beyond them (`cache_elements`: attention scores, a recurrent layer's
    steps). Then either a probe's pass (two layers' caches and an output at a time, at most one batch of
    samples, and the contrast's float64 features) or the loss (targets, dLoss/dy, dLoss/dz) and the backward pass,
    which frees each layer's cache and gradients once it has used them: at layer i, its parameters' gradients,
    dLoss/dy, dLoss/dz, dLoss/dx, the statistics' temporary and one gradient per element its kind's cache keeps
    beyond them. Convolutions, pools and transposed convolutions add their shared workspace, one buffer per role
    kept at its largest need (their classes' `scratch`)."""
    itemsize = np.dtype(spec.dtype).itemsize
    batch = spec.batch
    layers = spec.layers
    params = [_parameter_elements(layer) for layer in layers]
    outputs = [batch * math.prod(layer.output_shape) for layer in layers]
    inputs = [batch * math.prod(layer.input_shape) for layer in layers]
    kept = [output * _arrays_kept(layer) + _cache_elements(layer, batch) for layer, output in zip(layers, outputs)]
    gradients = [_gradient_elements(layer, count) for layer, count in zip(layers, params)]
    inputs[0] = 0  # the first layer computes no dLoss/dx (and its input is counted once, below)
    extra = [_cache_elements(layer, batch) for layer in layers]
    backward = max(grad + more + x + 2 * y + max(y, grad) for grad, more, x, y in zip(gradients, extra, inputs, outputs))
    loss = 4 * outputs[-1]  # targets, dLoss/dy, dLoss/dz and one temporary while they are computed
    # a probe's pass holds the cache of the layer it runs and of the one before (the loop's last item) and the output
    probe = max(before + keep + 2 * y for before, keep, y in zip([0] + kept, kept, outputs))
    # convolutions, pools and transposed convolutions share one buffer per workspace role (conv._Workspace: the
    # im2col matrix, the GEMM output, the padded input, the col2im accumulator, ...), each grown to the largest
    # layer's need and kept: the sum over roles of the largest need (each kind's `scratch` says its roles)
    workspace = _workspace_bytes(spec, itemsize) // itemsize
    # a kind outside the shared workspace declares its pass's temporary (patchify's patch matrix): the largest, once
    workspace += max((batch * _temporary_elements(layer) for layer in layers), default=0)
    # the contrast probe: float64 copies of n samples and their near copies, at the input, then at the readout's
    weighted = [layer.index for layer in layers if layer.init is not None and not layer_kinds.LAYERS[layer.kind].block]
    readout = weighted[-1] if weighted else 0  # as probes.readout_index: the last layer with weights
    features = max(math.prod(spec.input_shape), math.prod(layers[readout].input_shape)) if readout else 0
    features *= spec.input_distribution != "tokens" and batch >= 8
    contrast = CONTRAST_COPIES * features * min(batch // 2, CONTRAST_SAMPLES) * 8 // itemsize
    statistics = 2 * max(params)  # after the backward pass: a weight matrix's deviation and symmetry's copy
    input_bytes = batch * math.prod(spec.input_shape) * (8 if spec.input_distribution == "tokens" else itemsize)
    peak = sum(params) + workspace + max(sum(kept) + max(probe + contrast, loss + backward), statistics)
    largest, largest_bytes, shape = _largest_layer(spec, params, outputs)
    return MemoryEstimate(itemsize * peak + input_bytes + RUN_OVERHEAD, largest, itemsize * largest_bytes, shape)


def _parameter_elements(layer: LayerSpec) -> int:
    """The parameters a built layer holds, at their real shapes (an attention block's every matrix, an
    embedding's (vocab, dim) table, twice: see estimate_memory); a tied matrix is its embedding's, not counted."""
    kind = layer_kinds.LAYERS[layer.kind]
    shapes = kind.parameter_shapes(layer.input_shape, layer.config, bias=bool(layer.bias))
    if layer.tie is not None:
        shapes = {name: shape for name, shape in shapes.items() if name != "weights"}
    count = sum(math.prod(shape) for shape in shapes.values())
    return 2 * count if kind.reads_tokens else count


def _gradient_elements(layer: LayerSpec, held: int) -> int:
    """The gradients of a layer's parameters (a tied matrix's too: the dense layer computes its own)."""
    if layer.tie is not None:
        return held + math.prod(weightgeometry.main(layer).shape)
    return held // 2 if layer_kinds.LAYERS[layer.kind].reads_tokens else held


def _arrays_kept(layer: LayerSpec) -> int:
    """Output-sized arrays a layer's cache keeps: its output, and its pre-activation when an activation makes a
    new array (a normalization: x̂; dropout: its mask). A kind built from a parameter dict (attention, transformer,
    recurrent) declares everything else in its `cache_elements`: its activation acts inside."""
    kind = layer_kinds.LAYERS[layer.kind]
    if kind.params_dict:
        return 1
    separate = layer.activation is not None and layer.activation.name != "identity"
    return 2 if separate or kind.normalizes or layer.kind == "dropout" else 1


def _cache_elements(layer: LayerSpec, batch: int) -> int:
    """What a layer keeps for its backward pass beyond its output and pre-activation (its kind's declared
    `cache_elements`: a recurrent layer's states and gates of every step, attention scores, ...)."""
    return layer_kinds.LAYERS[layer.kind].cache_elements(layer, batch)


def _temporary_elements(layer: LayerSpec) -> int:
    """Per sample: the temporary a layer's pass takes beside its arrays when its kind does not use the shared
    workspace (its `scratch_elements`: patchify's patch matrix); 0 for the workspace's kinds (counted there)."""
    kind = layer_kinds.LAYERS[layer.kind]
    return 0 if hasattr(kind.cls, "scratch") else kind.scratch_elements(layer)


def _workspace_bytes(spec: NetworkSpec, itemsize: int) -> int:
    """Bytes of the shared workspace after a pass: per role, the largest need of any layer (its kind's class
    `scratch(input_shape, config, batch, itemsize)`), summed over roles."""
    roles: dict[str, int] = {}
    for layer in spec.layers:
        scratch = getattr(layer_kinds.LAYERS[layer.kind].cls, "scratch", None)
        if scratch is None:
            continue
        for role, size in scratch(layer.input_shape, layer.config, spec.batch, itemsize).items():
            roles[role] = max(roles.get(role, 0), size)
    return sum(roles.values())


def _largest_layer(spec: NetworkSpec, params: list, outputs: list) -> tuple:
    """(layer, elements, shape) of the layer with the most parameters (an embedding's table once), else of the
    largest output."""
    held = [count // 2 if layer_kinds.LAYERS[layer.kind].reads_tokens else count for layer, count in zip(spec.layers, params)]
    if max(held) > 0:
        index = max(range(len(held)), key=held.__getitem__)
        layer = spec.layers[index]
        shapes = layer_kinds.LAYERS[layer.kind].parameter_shapes(layer.input_shape, layer.config, bias=False)
        shape = max(shapes.values(), key=math.prod) if shapes else ()
        return layer, held[index], tuple(shape)
    index = max(range(len(outputs)), key=outputs.__getitem__)
    return spec.layers[index], outputs[index], (spec.batch, *spec.layers[index].output_shape)


def available_memory() -> int:
    """Bytes the machine can give now (MemAvailable), or a conservative guess."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_memory(spec: NetworkSpec, max_memory: int | None, draws: dict | None = None) -> None:
    """Refuse (SpecErrors, located at the largest layer) a run whose estimate exceeds `max_memory` (default: half
    the memory available now), saying what would fit. `draws`, compare's shared family samples: what it holds
    now, and one more family's draw of every weight matrix, come on top."""
    estimate = estimate_memory(spec)
    limit = max_memory if max_memory is not None else int(available_memory() * DEFAULT_MEMORY_FRACTION)
    cached = _draws_bytes(spec, draws)
    if estimate.total + cached <= limit:
        return
    layer = estimate.largest_layer
    source = "--max-memory" if max_memory is not None else "half the memory available now"
    raise SpecErrors([SpecProblem(
        layer.location, layer.path,
        f"this run needs about {format_bytes(estimate.total + cached)} ({describe(estimate, spec.batch)}), more than "
        f"the {format_bytes(limit)} allowed ({source}); {_what_fits(spec, limit - cached)}",
        file=spec.file,
    )])


def describe(estimate: MemoryEstimate, batch: int) -> str:
    """'parameters, activations and gradients at batch 4; the largest layer is 'wte' with 50257×768 parameters
    (154.4 MB)'."""
    layer, shape = estimate.largest_layer, "×".join(map(str, estimate.largest_shape))
    what = f"{shape} parameters" if layer.init is not None or layer_kinds.LAYERS[layer.kind].holds_parameters else f"a {shape} output"
    return (f"parameters, activations and gradients at batch {batch}; the largest layer is '{layer.name}' with "
            f"{what} ({format_bytes(estimate.largest_bytes)})")


def fitting_batch(spec: NetworkSpec, limit: int) -> int:
    """The largest batch below the spec's whose estimate is within `limit` bytes (0: not even batch 1)."""
    low, high = 0, spec.batch  # estimate(low) fits (0: vacuously), estimate(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if estimate_memory(spec._replace(batch=middle)).total <= limit:
            low = middle
        else:
            high = middle
    return low


def _what_fits(spec: NetworkSpec, limit: int) -> str:
    batch = fitting_batch(spec, limit)
    if batch:
        return f"batch {batch} fits (set batch: {batch} in the spec), or raise the limit with --max-memory"
    smallest = estimate_memory(spec._replace(batch=1)).total
    return f"even batch 1 needs about {format_bytes(smallest)}: raise the limit with --max-memory"


def _draws_bytes(spec: NetworkSpec, draws: dict | None) -> int:
    """compare's shared draws: what they hold, and one more family's sample of every weight matrix."""
    if draws is None:
        return 0
    weights = sum(math.prod(weightgeometry.main(layer).shape) for layer in spec.layers
                  if layer.init is not None and layer.tie is None)
    return sum(draw.nbytes for draw in list(draws.values())) + weights * np.dtype(spec.dtype).itemsize


def out_of_memory(spec: NetworkSpec, error: MemoryError) -> SpecErrors:
    """A MemoryError during a run, as the user's input problem (exit 2): what the run needed and what would fit."""
    estimate = estimate_memory(spec)
    detail = f" ({error})" if str(error) else ""
    available = available_memory()
    return SpecErrors([SpecProblem(None, "", (
        f"out of memory{detail}: this run needs about {format_bytes(estimate.total)} ({describe(estimate, spec.batch)}), "
        f"with {format_bytes(available)} available now; {_what_fits(spec, int(available * DEFAULT_MEMORY_FRACTION))}"),
        file=spec.file)])


def _standard_draw(spec: NetworkSpec, layer: LayerSpec, draws: dict | None):
    """The layer's family sample, drawn once per (layer, family) when `draws` is shared (common random numbers)."""
    family = layer.init.definition.family_of(layer.init.params)
    if draws is None or family is None:
        return None
    dtype = np.dtype(spec.dtype)
    shape = weightgeometry.main(layer).shape  # layer.matrix, (fan_in, units), but for a transposed conv
    key = (spec.seed, layer.index, family, shape, dtype.str)
    if key not in draws:
        rng = stream(spec.seed, STREAM_WEIGHTS, layer.index)
        draws[key] = schemes.FAMILY_SAMPLERS[family](rng, shape, dtype)
    return draws[key]


def _parameters(spec: NetworkSpec, layer: LayerSpec, draws: dict | None = None):
    """(weights, bias) of one layer: the (fan_in, units) matrix its scheme draws, or (None, None).
    A tied matrix is None here (build points it at the embedding's table); a supplied one is zeros, which
    build overwrites (supplied.apply); neither draws."""
    if layer.init is None:
        return None, None
    dtype = np.dtype(spec.dtype)
    init = layer.init
    if layer.tie is not None:
        weights = None
    elif paramspec.main_supplied(layer):
        weights = np.zeros(weightgeometry.main(layer).shape, dtype=dtype)
    else:
        try:
            weights = schemes.initial_weights(init.definition, init.params, stream(spec.seed, STREAM_WEIGHTS, layer.index),
                                              weightgeometry.main(layer), dtype, _standard_draw(spec, layer, draws))
        except schemes.UnfitScheme as err:  # spec.shape_problems reports these first; a spec built by hand lands here
            raise SpecErrors([SpecProblem(init.location, f"{layer.path}.init", str(err), file=spec.file)]) from None
        except Exception as err:  # a custom init is user code: its failure is the user's input problem
            if init.scheme != "custom":
                raise
            raise SpecErrors([SpecProblem(init.location, f"{layer.path}.init", f"custom init failed: {err}", file=spec.file)]) from None
    if layer.recurrent_init is not None:
        return _recurrent_parameters(spec, layer, weights), None
    if layer_kinds.LAYERS[layer.kind].weights_from_init:
        return _block_parameters(spec, layer, weights), None
    if layer_kinds.LAYERS[layer.kind].block:  # a residual projection shortcut has weights and no bias
        return weights, None
    bias = None
    if layer.bias:
        if init.scheme == "torch_default" and layer.bias_init is None and "bias" not in layer.inits:
            bias = sampling.standard_uniform(stream(spec.seed, STREAM_BIAS, layer.index), (layer.units,), dtype)
            bias *= dtype.type(1 / np.sqrt(layer.fan_in))
        else:
            bias = _vector(spec, layer, "bias", (layer.units,), layer.bias_init)
    return weights, bias


def _vector(spec: NetworkSpec, layer: LayerSpec, name: str, shape, default) -> np.ndarray:
    """A bias (or a norm's gamma/beta) of `shape`: its per-parameter init, else `default` (a scheme or a
    number; None: 0). A drawn one has a stream of its own: a dense/conv bias the layer's STREAM_BIAS (as
    torch_default's), any other (STREAM_PARAM, layer, its place among the kind's parameters)."""
    dtype = np.dtype(spec.dtype)
    init = layer.inits.get(name, default)
    if not isinstance(init, InitSpec):
        return np.full(shape, init or 0.0, dtype=dtype)
    if layer_kinds.LAYERS[layer.kind].params_dict:
        rng = stream(spec.seed, STREAM_PARAM, layer.index, paramspec.position(layer, name))
    else:
        rng = stream(spec.seed, STREAM_BIAS, layer.index)
    return schemes.initial_weights(init.definition, init.params, rng, paramspec.vector_geometry(layer, name, shape), dtype)


def _recurrent_parameters(spec: NetworkSpec, layer: LayerSpec, input_weights) -> dict:
    """An RNN/LSTM/GRU's parameters: input weights from `init`, hidden-to-hidden weights from
    `recurrent_init` (its own stream), biases at bias_init (the LSTM adds its forget bias itself)."""
    dtype = np.dtype(spec.dtype)
    shapes = layer_kinds.LAYERS[layer.kind].cls.parameter_shapes(layer.input_shape, layer.config)
    recurrent = layer.recurrent_init
    try:
        if layer.supplied is not None and "recurrent_weights" in layer.supplied.shapes:
            recurrent_weights = np.zeros(weightgeometry.recurrent(layer).shape, dtype=dtype)  # supplied.apply fills it
        else:
            recurrent_weights = schemes.initial_weights(recurrent.definition, recurrent.params,
                                                        stream(spec.seed, STREAM_RECURRENT, layer.index),
                                                        weightgeometry.recurrent(layer), dtype)
    except schemes.UnfitScheme as err:
        raise SpecErrors([SpecProblem(recurrent.location, f"{layer.path}.recurrent_init", str(err), file=spec.file)]) from None
    params = {
        "input_weights": input_weights,
        "recurrent_weights": recurrent_weights,
        "bias": _vector(spec, layer, "bias", shapes["bias"], layer.bias_init),
    }
    if "recurrent_bias" in shapes:
        params["recurrent_bias"] = _vector(spec, layer, "recurrent_bias", shapes["recurrent_bias"], 0.0)
    return params


def _block_parameters(spec: NetworkSpec, layer: LayerSpec, first_weights) -> dict:
    """Attention / transformer parameters: every weight matrix from `init` or its per-parameter init (the
    first from the layer's own stream, as any layer's; each other from a stream of its own), biases at
    bias_init; layer norms keep their gamma 1, beta 0 unless a per-parameter init draws them."""
    dtype = np.dtype(spec.dtype)
    shapes = layer_kinds.LAYERS[layer.kind].cls.parameter_shapes(layer.input_shape, layer.config)
    params = {}
    for j, (name, geometry) in enumerate(weightgeometry.weights(layer).items()):
        init = paramspec.drawn_by(layer, name, j)
        if j == 0:
            params[name] = first_weights
        elif init is None:
            params[name] = np.zeros(geometry.shape, dtype=dtype)  # supplied.apply fills it
        else:
            try:
                params[name] = schemes.initial_weights(init.definition, init.params,
                                                       stream(spec.seed, STREAM_BLOCK, layer.index * 64 + j), geometry, dtype)
            except schemes.UnfitScheme as err:
                raise SpecErrors([SpecProblem(init.location, f"{layer.path}.init", f"{err} ({name})", file=spec.file)]) from None
    for name, shape in shapes.items():
        if name.endswith("bias"):
            params[name] = _vector(spec, layer, name, shape, layer.bias_init)
        elif name in layer.inits and name not in params:
            params[name] = _vector(spec, layer, name, shape, None)
    return params


def build(spec: NetworkSpec, max_memory: int | None = None, draws: dict | None = None) -> Network:
    """Check the memory bound, then initialise every layer (in threads: the draws are independent).

    Builds that share a `draws` dict share each layer's standard family sample, so schemes of
    one family differ only by their scale (and the sample is drawn once, not once per scheme).
    """
    check_memory(spec, max_memory, draws)
    workers = min(len(spec.layers), os.cpu_count() or 1)
    if workers > 1 and sum((layer.fan_in or 0) * layer.units for layer in spec.layers) > PARALLEL_DRAWS:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            parameters = list(pool.map(lambda layer: _parameters(spec, layer, draws), spec.layers))
    else:
        parameters = [_parameters(spec, layer, draws) for layer in spec.layers]
    layers: list = []
    for layer, (weights, bias) in zip(spec.layers, parameters):
        if layer.tie is not None:  # the embedding's table itself (built earlier), transposed: no copy
            weights = paramspec.tied_matrix(spec, layer, layers)
        built = layer_kinds.make(layer, weights, bias, activations.make(layer.activation.name, layer.activation.params),
                                 np.dtype(spec.dtype), stream(spec.seed, STREAM_DROPOUT, layer.index), spec.eval,
                                 stream(spec.seed, STREAM_WEIGHTS, layer.index) if layer.init is None else None)
        layers.append(supplied.apply(built, layer.supplied, paramspec.supplied_skip(layer)))
    inputs = input_batch(spec, stream(spec.seed, STREAM_INPUT))
    return Network(spec, layers, inputs, stream(spec.seed, STREAM_TARGETS))
