"""BLAS threads sized to the work: one thread for a spec whose GEMMs are small, all of them for a large one."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from conftest import make_spec
from initdiag import threads


def _blas_threads() -> int:
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


def test_a_small_spec_runs_on_one_blas_thread_and_a_large_one_keeps_them_all():
    small = make_spec("input: [16]\nbatch: 8\nlayers:\n  - dense: 32\n  - dense: 4\n")
    large = make_spec("input: [1024]\nbatch: 512\nlayers:\n  - dense: 1024\n  - dense: 10\n")
    assert threads.largest_gemm(small) == 8 * 16 * 32 < threads.SMALL_GEMM <= threads.largest_gemm(large)
    before = _blas_threads()
    with threads.sized_to(small):
        assert _blas_threads() == 1
    assert _blas_threads() == before
    with threads.sized_to(large):
        assert _blas_threads() == before


def test_a_sequence_layer_counts_its_steps_and_a_map_its_positions():
    sequence = make_spec("input: [10, 8]\nbatch: 4\nlayers:\n  - dense: 6\n")
    conv = make_spec("input: [3, 5, 5]\nbatch: 2\nlayers:\n  - conv2d: {filters: 7, kernel: 3, padding: 1}\n")
    assert threads.largest_gemm(sequence) == 4 * 10 * 8 * 6
    assert threads.largest_gemm(conv) == 2 * 25 * 27 * 7
