"""Time `initdiag check` on a 24-layer, 1024-wide ReLU network at batch 512 against bare numpy matmuls.

The bare baseline does the same matmuls, float32: per layer one forward (x @ W) and two
backward (dZ @ W.T and X.T @ dZ). initdiag's time covers everything after parsing the spec:
drawing every weight, the forward and backward passes, every statistic, the mean-field
prediction, the checks and the report.
Both are reported as GFLOP/s of the same matmul work; the target is initdiag >= 70% of bare.

    python benchmarks/bench_check.py [--repeat 5] [--layers 24] [--width 1024] [--batch 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from initdiag import pipeline, spec, yamlsource


def make_spec(layers: int, width: int, batch: int) -> spec.NetworkSpec:
    text = f"name: bench\ninput: [{width}]\nbatch: {batch}\ndefaults: {{init: relu, activation: relu}}\nlayers:\n"
    text += f"  - dense: {width}\n" * layers
    return spec.parse(yamlsource.loads(text, "bench.yaml"), base_dir=".", default_name="bench")


def time_initdiag(net_spec) -> float:
    start = time.perf_counter()
    pipeline.diagnose(net_spec)  # what `check` does after parsing: draw, run, predict, find, report
    return time.perf_counter() - start


def time_bare(layers: int, width: int, batch: int, rng) -> float:
    weights = [rng.standard_normal((width, width), dtype=np.float32) for _ in range(layers)]
    x0 = rng.standard_normal((batch, width), dtype=np.float32)
    dz = rng.standard_normal((batch, width), dtype=np.float32)
    start = time.perf_counter()
    xs, x = [], x0
    for w in weights:
        xs.append(x)
        x = x @ w
    for w, x in zip(reversed(weights), reversed(xs)):
        _ = x.T @ dz
        dz = dz @ w.T
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    flops = 3 * args.layers * 2.0 * args.batch * args.width * args.width
    net_spec = make_spec(args.layers, args.width, args.batch)
    rng = np.random.default_rng(0)
    time_initdiag(net_spec)  # warm up imports, BLAS threads and page faults
    time_bare(args.layers, args.width, args.batch, rng)
    ours = min(time_initdiag(net_spec) for _ in range(args.repeat))
    bare = min(time_bare(args.layers, args.width, args.batch, rng) for _ in range(args.repeat))
    print(f"network: {args.layers} x dense {args.width} relu (He), batch {args.batch}, float32; "
          f"{flops / 1e9:.1f} GFLOP of matmuls; best of {args.repeat}")
    print(f"bare numpy matmuls : {bare:.3f} s  {flops / bare / 1e9:7.1f} GFLOP/s")
    print(f"initdiag check     : {ours:.3f} s  {flops / ours / 1e9:7.1f} GFLOP/s  (initialization included)")
    print(f"initdiag / bare    : {bare / ours:.0%} of the bare matmul rate (target >= 70%)")


if __name__ == "__main__":
    main()
