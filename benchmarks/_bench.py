"""What the family benchmarks share: timing, the bare-matmul model of a spec, PyTorch doing the same job, the
peak memory against initdiag's estimate, the child processes per thread count, and the printing.

One benchmark compares three ways of doing one job on one parsed spec (init, forward, backward, per-layer
statistics of activations and gradients):
  initdiag  pipeline.diagnose(spec): what `check` does after parsing (draw, run, statistics, checks, report);
  bare      only the GEMMs the network does, forward and backward, on operands of the same shapes (`gemms`);
  torch     the same network built in PyTorch (_torchjob.py), its default init, forward, loss, backward, and per
            layer the mean and variance of every output, pre-activation, output gradient, weight and weight
            gradient, and the dead fraction after a ReLU.
Thread counts are fixed before numpy is imported, so each count runs in its own child process
(OMP/OPENBLAS/MKL_NUM_THREADS and torch.set_num_threads); the child prints one JSON line per spec.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT / "sample_specs"
FAMILIES = ("dense", "cnn", "transformer", "lstm", "gpt2")  # module bench_<family>.py, each with specs(quick)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------ specs
def parse_text(text: str, name: str):
    from initdiag import spec, yamlsource

    return spec.parse(yamlsource.loads(text, name), base_dir=SAMPLES, default_name=Path(name).stem)


def load_sample(name: str, edit=None):
    """sample_specs/`name`, its YAML document first passed through `edit(data)` when given (the --quick sizes)."""
    import yaml

    data = yaml.safe_load((SAMPLES / name).read_text(encoding="utf-8"))
    if edit is not None:
        edit(data)
    return parse_text(json.dumps(data), name)


# ------------------------------------------------------------------ the bare-matmul model
class Gemm(NamedTuple):
    """(stack, m, k) @ (stack, k, n), `repeat` times; its backward is dA = dC @ B^T (unless not `need_da`)
    and dB = A^T @ dC."""

    m: int
    k: int
    n: int
    stack: int = 1
    repeat: int = 1
    need_da: bool = True

    @property
    def flop(self) -> float:
        return 2.0 * self.stack * self.m * self.k * self.n * self.repeat * (3 if self.need_da else 2)


def _prod(shape) -> int:
    out = 1
    for size in shape:
        out *= int(size)
    return out


def gemms(net_spec) -> list[Gemm]:
    """The GEMMs the network does, per layer kind: dense x @ W; conv the im2col GEMM (batch · output positions,
    C_in/groups · kernel area, filters/groups) per group; a transformer block its four projections, its score
    and value products per head and its feed-forward matrices; an LSTM its input projection over all steps and
    one (batch, units) @ (units, 4 units) product per step; a residual block's projection shortcut. Layers reading
    the spec's input need no input gradient. Embeddings, norms, pooling and activations do no GEMM."""
    batch, out = net_spec.batch, []
    for layer in net_spec.layers:
        first = tuple(layer.inputs) == (-1,) or (not layer.inputs and layer.index == 0)
        kind, config = layer.kind, layer.config
        if kind == "dense":
            rows = batch * _prod(layer.input_shape) // layer.fan_in
            out.append(Gemm(rows, layer.fan_in, layer.units, need_da=not first))
        elif kind in ("conv1d", "conv2d"):
            groups = config.get("groups", 1)
            positions = _prod(layer.output_shape[1:])
            out.append(Gemm(batch * positions, layer.fan_in, layer.units // groups, stack=groups, need_da=not first))
        elif kind == "residual" and config.get("shortcut"):
            positions = _prod(layer.output_shape[1:]) if config["shortcut"] == "conv" else 1
            out.append(Gemm(batch * positions, layer.fan_in, layer.units))
        elif kind == "transformer":
            steps, dim, heads, ffn = layer.input_shape[0], config["dim"], config["heads"], config["ffn"]
            rows, head_dim = batch * steps, dim // heads
            kv = config.get("kv_heads") or heads
            out += [Gemm(rows, dim, dim), Gemm(rows, dim, kv * head_dim), Gemm(rows, dim, kv * head_dim),
                    Gemm(rows, dim, dim)]  # query, key, value, output
            scores = Gemm(steps, head_dim, steps, stack=batch * heads)  # q @ k.T per head
            out += [scores, Gemm(steps, steps, head_dim, stack=batch * heads)]  # and attention @ v
            gated = config.get("ffn_kind", config.get("kind", "mlp")) not in ("mlp", None)
            out += [Gemm(rows, dim, ffn)] * (2 if gated else 1) + [Gemm(rows, ffn, dim)]
        elif kind in ("lstm", "gru", "rnn"):
            gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
            steps, units = layer.input_shape[0], layer.units
            out.append(Gemm(batch * steps, layer.fan_in, gates * units, need_da=not first))
            out.append(Gemm(batch, units, gates * units, repeat=steps))
    return out


def bare_operands(shapes: list[Gemm], rng):
    import numpy as np

    operands = []
    for g in shapes:
        lead = (g.stack,) if g.stack > 1 else ()
        a = rng.standard_normal(lead + (g.m, g.k), dtype=np.float32)
        b = rng.standard_normal(lead + (g.k, g.n), dtype=np.float32)
        dc = rng.standard_normal(lead + (g.m, g.n), dtype=np.float32)
        operands.append((g, a, b, dc))
    return operands


def time_bare(operands) -> float:
    """Every GEMM forward in order, then every backward GEMM in reverse order."""
    start = time.perf_counter()
    for g, a, b, _ in operands:
        for _ in range(g.repeat):
            a @ b
    for g, a, b, dc in reversed(operands):
        for _ in range(g.repeat):
            if g.need_da:
                dc @ b.swapaxes(-1, -2)
            a.swapaxes(-1, -2) @ dc
    return time.perf_counter() - start


# ------------------------------------------------------------------ initdiag
def time_initdiag(net_spec) -> float:
    from initdiag import pipeline

    start = time.perf_counter()
    pipeline.diagnose(net_spec, max_memory=1 << 50)
    return time.perf_counter() - start


def peak_memory(net_spec) -> tuple[float, float]:
    """(tracemalloc's peak over one diagnose, network.estimate_memory), bytes. numpy reports its array buffers
    to tracemalloc, so the peak is the arrays and Python objects the run held at once."""
    import gc

    from initdiag import network, pipeline
    from initdiag.layers import conv

    estimate = network.estimate_memory(net_spec).total
    conv.release_workspace()  # the timed runs grew the shared workspace: count it as a fresh check does
    gc.collect()
    tracemalloc.start()
    try:
        pipeline.diagnose(net_spec, max_memory=1 << 50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, estimate


# ------------------------------------------------------------------ one child: one thread count, every spec
def measure(families, quick: bool, repeat: int, threads: int, with_torch: bool):
    """Yields one result dict per spec of each family, measured in this process at `threads` threads."""
    import numpy as np

    have_torch = False
    if with_torch:
        try:
            import torch

            import _torchjob

            torch.set_num_threads(threads)
            have_torch = True
        except ImportError:
            pass
    rng = np.random.default_rng(0)
    for family in families:
        module = importlib.import_module(f"bench_{family}")
        for label, net_spec in module.specs(quick):
            shapes = gemms(net_spec)
            operands = bare_operands(shapes, rng)
            time_initdiag(net_spec)  # warm up imports, BLAS threads and page faults
            time_bare(operands)
            torch_s, torch_note = None, ""
            if have_torch:
                try:
                    _torchjob.time_job(net_spec)
                except NotImplementedError as error:
                    torch_note, have_this = str(error), False
                else:
                    have_this = True
            ours = bare = torch_best = float("inf")
            for _ in range(repeat):  # interleaved, so drift in the machine's speed hits all alike
                ours = min(ours, time_initdiag(net_spec))
                bare = min(bare, time_bare(operands))
                if have_torch and have_this:
                    torch_best = min(torch_best, _torchjob.time_job(net_spec))
            if have_torch and have_this:
                torch_s = torch_best
            del operands
            result = {"family": family, "spec": label, "threads": threads, "initdiag_s": ours, "bare_s": bare,
                      "gflop": sum(g.flop for g in shapes) / 1e9, "torch_s": torch_s, "torch_note": torch_note}
            if threads == 1:
                peak, estimate = peak_memory(net_spec)
                result.update(peak_mb=peak / 2**20, estimate_mb=estimate / 2**20)
            yield result


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def collect(families, quick: bool, repeat: int, thread_counts, with_torch: bool) -> list[dict]:
    """Run one child per thread count; merge their results per spec: {spec: {threads: result}}."""
    rows = {}
    for threads in thread_counts:
        command = [sys.executable, str(HERE / "_bench.py"), "--child", "--threads", str(threads),
                   "--families", ",".join(families), "--repeat", str(repeat)]
        command += ["--quick"] * quick + ["--no-torch"] * (not with_torch)
        with subprocess.Popen(command, env=child_env(threads), stdout=subprocess.PIPE, text=True) as child:
            for line in child.stdout:
                result = json.loads(line)
                rows.setdefault((result["family"], result["spec"]), {})[threads] = result
                print(f"  measured {result['family']} {result['spec']} at {threads} thread(s)", file=sys.stderr,
                      flush=True)
        if child.returncode:
            raise SystemExit(f"benchmark child at {threads} thread(s) failed (exit {child.returncode})")
    return [dict(family=key[0], spec=key[1], by_threads=value) for key, value in rows.items()]


# ------------------------------------------------------------------ printing
def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def table(rows: list[dict]) -> str:
    """One line per spec: 1-thread seconds, initdiag/torch at 1 and 2 threads, % of the bare matmul rate at
    1 and 2 threads, peak MB against the estimate (Markdown, so the README can take it as printed)."""
    counts = sorted({t for row in rows for t in row["by_threads"]})
    head = ["family", "spec", "initdiag s", "torch s"] + [f"initdiag/torch {t}T" for t in counts]
    head += [f"% of bare {t}T" for t in counts] + ["GFLOP", "peak MB", "estimate MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        by = row["by_threads"]
        one = by.get(1) or by[counts[0]]
        cells = [row["family"], row["spec"], f"{one['initdiag_s']:.3f}",
                 f"{one['torch_s']:.3f}" if one["torch_s"] else "n/a"]
        cells += [_ratio(by[t]["initdiag_s"], by[t]["torch_s"]) if t in by else "" for t in counts]
        cells += [f"{by[t]['bare_s'] / by[t]['initdiag_s']:.0%}" if t in by else "" for t in counts]
        cells += [f"{one['gflop']:.2f}", f"{one.get('peak_mb', 0):.0f}", f"{one.get('estimate_mb', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        for threads, r in sorted(row["by_threads"].items()):
            torch_text = f"torch {r['torch_s']:.3f} s" if r["torch_s"] else f"torch n/a {r['torch_note']}".rstrip()
            lines.append(f"{row['family']:11s} {row['spec']:24s} {threads}T: initdiag {r['initdiag_s']:.3f} s, "
                         f"bare matmuls {r['bare_s']:.3f} s ({r['gflop'] / r['bare_s']:.1f} GFLOP/s), {torch_text}")
        one = row["by_threads"].get(1)
        if one and "peak_mb" in one:
            lines.append(f"{'':11s} {'':24s} peak {one['peak_mb']:.0f} MB (tracemalloc), "
                         f"estimate {one['estimate_mb']:.0f} MB ({one['estimate_mb'] / one['peak_mb']:.2f}x the peak)")
    return "\n".join(lines)


def arguments(description: str, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    parser.add_argument("--repeat", type=int, default=None, help="best of this many runs (default 3; 1 with --quick)")
    parser.add_argument("--threads", default="1,2", help="thread counts, one child process each (default 1,2)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even where it is installed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--families", default=",".join(FAMILIES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(families, description: str, argv=None) -> list[dict]:
    """A family script's (or bench_all's) main: the children, the per-spec lines and the table."""
    args = arguments(description, argv)
    counts = [int(t) for t in args.threads.split(",")]
    rows = collect(families, args.quick, args.repeat, counts, not args.no_torch)
    print(details(rows))
    print()
    print(table(rows))
    return rows


def _child(argv=None) -> None:
    args = arguments("child", argv)
    sys.path.insert(0, str(HERE))
    for result in measure(args.families.split(","), args.quick, args.repeat, int(args.threads), not args.no_torch):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _child()
