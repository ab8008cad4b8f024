"""Time initdiag's Conv2d layers, forward and backward, against bare numpy matmuls of the same GEMMs.

Network: a batch of 64 3×32×32 inputs through conv 3->64->128->256, kernel 3×3, padding
"same", stride 1, ReLU, float32. initdiag's time is one forward pass through the three layers
plus one backward pass computing every weight, bias and input gradient (the first layer's
input gradient included), im2col/col2im, transposes, bias and activations all counted.

The bare baseline runs only the GEMMs those layers do, on operands of the same shapes and
memory layouts, per layer (P = 32·32 positions, K = C_in·3·3 rows of im2col):
    forward   W^T (F×K) @ cols (K×N·P)
    backward  cols (K×N·P) @ dZ^T (N·P×F)      weight gradient
              W (K×F) @ dZ^T (F×N·P)           im2col gradient
Both are reported as GFLOP/s of that work, counting 2·M·N·K per GEMM; the target is
initdiag >= 50% of the bare rate.

    python benchmarks/bench_conv.py [--repeat 5] [--batch 64] [--dtype float32] [--phases]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from initdiag import activations
from initdiag.layers.conv import Conv2d, normalize_config

CHANNELS = (3, 64, 128, 256)
SIZE = 32


def build(batch: int, dtype, rng) -> tuple[list, np.ndarray, np.ndarray]:
    layers, shape = [], (CHANNELS[0], SIZE, SIZE)
    for i, filters in enumerate(CHANNELS[1:]):
        config = normalize_config("conv2d", {"filters": filters, "kernel": 3, "padding": "same"})
        rows, cols = Conv2d.weight_shape(shape, config)
        fan_in, _ = Conv2d.fans(shape, config)
        weights = (rng.standard_normal((rows, cols)) * np.sqrt(2 / fan_in)).astype(dtype)
        bias = np.full(filters, 0.01, dtype=dtype)
        layers.append(Conv2d(f"conv{i + 1}", weights, bias, activations.make("relu"), shape, config))
        shape = Conv2d.output_shape(shape, config)
    x = rng.standard_normal((batch, CHANNELS[0], SIZE, SIZE)).astype(dtype)
    dy = rng.standard_normal((batch,) + shape).astype(dtype)
    return layers, x, dy


def gemm_shapes(batch: int) -> list[tuple[int, int, int]]:
    """(K, F, N·P) per layer: im2col rows, filters, columns."""
    return [(c_in * 9, c_out, batch * SIZE * SIZE) for c_in, c_out in zip(CHANNELS, CHANNELS[1:])]


def flop_count(batch: int) -> float:
    return sum(3 * 2.0 * k * f * cols for k, f, cols in gemm_shapes(batch))


def time_layers(layers, x, dy, phases: dict | None = None) -> float:
    start = time.perf_counter()
    caches = []
    for layer in layers:
        x, cache = layer.forward(x)
        caches.append(cache)
    middle = time.perf_counter()
    for layer, cache in zip(reversed(layers), reversed(caches)):
        dy, _ = layer.backward(dy, cache, need_dx=True)
    end = time.perf_counter()
    if phases is not None:
        phases["forward"] = min(phases.get("forward", np.inf), middle - start)
        phases["backward"] = min(phases.get("backward", np.inf), end - middle)
    return end - start


def bare_operands(batch: int, dtype, rng) -> list[tuple[np.ndarray, ...]]:
    operands = []
    for k, f, cols in gemm_shapes(batch):
        operands.append((
            rng.standard_normal((k, f)).astype(dtype),  # W
            rng.standard_normal((k, cols)).astype(dtype),  # cols
            rng.standard_normal((f, cols)).astype(dtype),  # dZ^T
        ))
    return operands


def time_bare(operands, phases: dict | None = None) -> float:
    start = time.perf_counter()
    for w, cols, _ in operands:
        _ = w.T @ cols
    middle = time.perf_counter()
    for w, cols, dzt in reversed(operands):
        _ = cols @ dzt.T
        _ = w @ dzt
    end = time.perf_counter()
    if phases is not None:
        phases["forward"] = min(phases.get("forward", np.inf), middle - start)
        phases["backward"] = min(phases.get("backward", np.inf), end - middle)
    return end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--phases", action="store_true", help="also print forward and backward times apart")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    layers, x, dy = build(args.batch, dtype, rng)
    operands = bare_operands(args.batch, dtype, rng)
    flops = flop_count(args.batch)

    time_layers(layers, x, dy)  # warm up BLAS threads and page faults
    time_bare(operands)
    ours_phases, bare_phases = {}, {}
    ours, bare = np.inf, np.inf
    for _ in range(args.repeat):  # interleaved, so drift in the machine's speed hits both alike
        ours = min(ours, time_layers(layers, x, dy, ours_phases))
        bare = min(bare, time_bare(operands, bare_phases))

    print(f"network: {args.batch} x 3x32x32 through conv 3->64->128->256, 3x3 'same', relu, {args.dtype}; "
          f"forward + backward (weight, bias and input gradients)")
    print(f"{flops / 1e9:.1f} GFLOP of GEMMs (9 GEMMs, 2*M*N*K each); best of {args.repeat}")
    print(f"bare numpy matmuls : {bare:.3f} s  {flops / bare / 1e9:7.1f} GFLOP/s")
    print(f"initdiag Conv2d    : {ours:.3f} s  {flops / ours / 1e9:7.1f} GFLOP/s")
    print(f"initdiag / bare    : {bare / ours:.0%} of the bare matmul rate (target >= 50%)")
    if args.phases:
        for phase in ("forward", "backward"):
            print(f"  {phase:8s}: initdiag {ours_phases[phase]:.3f} s, bare {bare_phases[phase]:.3f} s")


if __name__ == "__main__":
    main()
