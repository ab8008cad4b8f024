"""Build a network from a validated spec: estimate its memory, then draw every layer's parameters.

Random numbers: one independent numpy stream per layer's weights and per layer's biases,
and one each for the input batch and the loss targets, all derived from the spec's seed
through SeedSequence spawn keys. The same spec and seed give the same numbers, and changing
one layer leaves every other layer's draws unchanged. A layer without an `init` matrix may
draw a value of its own from its (otherwise unused) weight stream: a class token does.
"""

from __future__ import annotations

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
    largest_layer: LayerSpec
    largest_bytes: int


def estimate_memory(spec: NetworkSpec) -> MemoryEstimate:
    """Bytes a run holds at its peak: parameters and their gradients, every layer's input,
    pre-activation and output (kept for the backward pass), and the largest layer's gradients,
    float64 statistics temporaries and (convolutions) im2col matrices, and one layer of a probe's pass."""
    itemsize = np.dtype(spec.dtype).itemsize
    batch = spec.batch
    per_layer = {}
    for layer in spec.layers:
        params = (_weight_elements(layer) + (layer.units if layer.bias else 0)) if layer.init is not None else 0
        outputs = int(np.prod(layer.output_shape))
        per_layer[layer.index] = itemsize * (2 * params + 2 * batch * outputs)
    widest = max(max(int(np.prod(layer.output_shape)), int(np.prod(layer.input_shape))) for layer in spec.layers)
    weighted = [layer for layer in spec.layers if layer.init is not None] or spec.layers
    largest = max(weighted, key=lambda layer: (layer.fan_in or 0) * layer.units)
    im2col = max((_im2col_elements(layer) for layer in spec.layers), default=0)
    transient = itemsize * (3 * batch * widest + 3 * batch * im2col) + 8 * 2 * max(batch * widest, (largest.fan_in or 0) * largest.units)
    kept = sum(_cache_elements(layer, batch) for layer in spec.layers) * itemsize
    # the forward-only probes (probes.py: at most one batch of samples at a time) hold one layer's cache and
    # output beside the measured pass's
    probe = itemsize * max(_cache_elements(layer, batch) + 3 * batch * int(np.prod(layer.output_shape)) for layer in spec.layers)
    total = sum(per_layer.values()) + itemsize * batch * int(np.prod(spec.input_shape)) + transient + kept + probe
    return MemoryEstimate(total, largest, per_layer[largest.index])


def _weight_elements(layer: LayerSpec) -> int:
    """The weights counted for a layer: fan_in × units, or the drawn matrix where its shape is not that (a
    transposed conv's fan_in is PyTorch's, filters/groups · taps, while it draws in/groups · taps rows)."""
    if layer_kinds.LAYERS[layer.kind].params_dict:
        return layer.fan_in * layer.units
    return int(np.prod(weightgeometry.main(layer).shape))


def _cache_elements(layer: LayerSpec, batch: int) -> int:
    """What a layer keeps for its backward pass beyond its output (its kind's declared `cache_elements`:
    a recurrent layer's states and gates of every step, attention scores, ...)."""
    return layer_kinds.LAYERS[layer.kind].cache_elements(layer, batch)


def _im2col_elements(layer: LayerSpec) -> int:
    """Per sample: scratch beside the layer's arrays (its kind's `scratch_elements`: a convolution's im2col matrix)."""
    return layer_kinds.LAYERS[layer.kind].scratch_elements(layer)


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


def check_memory(spec: NetworkSpec, max_memory: int | None) -> None:
    estimate = estimate_memory(spec)
    limit = max_memory if max_memory is not None else int(available_memory() * DEFAULT_MEMORY_FRACTION)
    if estimate.total <= limit:
        return
    layer = estimate.largest_layer
    source = "--max-memory" if max_memory is not None else "half the memory available now; raise it with --max-memory"
    raise SpecErrors([SpecProblem(
        layer.location, layer.path,
        f"this run needs about {format_bytes(estimate.total)} (weights, activations and gradients at batch "
        f"{spec.batch}), more than the {format_bytes(limit)} allowed ({source}); the largest layer is "
        f"'{layer.name}' with {layer.fan_in}×{layer.units} weights ({format_bytes(estimate.largest_bytes)})",
        file=spec.file,
    )])


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
    check_memory(spec, max_memory)
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
