"""The benchmark scripts (benchmarks/) run end to end on tiny settings, so they do not rot. Nothing is timed:
speed is what the scripts print, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import _bench  # noqa: E402


def test_bare_matmul_model_counts_the_dense_gemms():
    parsed = _bench.parse_text("input: [8]\nbatch: 4\nlayers:\n  - dense: 16\n  - dense: 2\n", "net.yaml")
    gemms = _bench.gemms(parsed)
    assert gemms == [_bench.Gemm(4, 8, 16, need_da=False), _bench.Gemm(4, 16, 2)]
    assert sum(g.flop for g in gemms) == 2 * 4 * 8 * 16 * 2 + 2 * 4 * 16 * 2 * 3


def test_every_family_script_runs_end_to_end_on_its_quick_setting():
    paths = [str(BENCHMARKS.parent), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_all.py"), "--quick", "--threads", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    families = {line.split("|")[1].strip() for line in table[1:]}
    assert families == set(_bench.FAMILIES)
    assert len(table) == 1 + 8  # the header and one row per spec
    assert all(line.count("|") == table[0].count("|") for line in table)
