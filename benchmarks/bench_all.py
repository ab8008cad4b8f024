"""Every family benchmark (dense, CNN, transformer, LSTM, GPT-2-small-like) in one run, one table.

Per spec: initdiag's seconds (pipeline.diagnose: init, forward, backward, statistics, checks, report; best of
--repeat), PyTorch CPU's for the same job, their ratio at each thread count, initdiag's time as a fraction of
the bare matmul rate of the network's own GEMMs, and tracemalloc's peak against network.estimate_memory.

    python benchmarks/bench_all.py [--quick] [--repeat 3] [--threads 1,2] [--no-torch]
"""

from __future__ import annotations

import _bench

if __name__ == "__main__":
    _bench.main(list(_bench.FAMILIES), __doc__.splitlines()[0])
