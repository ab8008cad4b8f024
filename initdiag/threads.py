"""BLAS threads sized to the work (threadpoolctl, imported only when a run starts).

OpenBLAS starts one worker thread per core and wakes them for every GEMM above a tiny size; on the small GEMMs
of many specs the workers spin more than they compute (and under `--jobs N`, N processes each wake every core).
So a spec whose largest GEMM is small runs single-threaded; a large one keeps every thread. The choice depends
on the spec alone, never on --jobs: BLAS sums in another order with another thread count, and a spec must give
the same figures however many processes check it.
"""

from __future__ import annotations

import contextlib

# multiply-adds of a layer's largest GEMM below which one thread is as fast: about 1 ms of one core's work,
# the scale at which waking a second thread starts to pay for itself
SMALL_GEMM = 1 << 24


def largest_gemm(spec) -> int:
    """Multiply-adds of the spec's largest layer GEMM: batch · positions · fan_in · units (0 without weights)."""
    largest = 0
    for layer in spec.layers:
        if layer.fan_in is None or layer.units is None:
            continue
        size = 1
        for extent in layer.output_shape:
            size *= extent
        positions = max(size // max(layer.units, 1), 1)  # a map's positions, a sequence's steps, 1 when flat
        largest = max(largest, spec.batch * positions * layer.fan_in * layer.units)
    return largest


def sized_to(spec):
    """A context in which BLAS uses one thread if the spec's GEMMs are small, else as many as it has."""
    if largest_gemm(spec) >= SMALL_GEMM:
        return contextlib.nullcontext()
    return limited(1)


def limited(threads: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")

