"""Transformer family: sample_specs/transformer_encoder.yaml (2 pre-norm blocks, dim 64, 4 heads, GELU, 16 steps,
batch 32), against the bare GEMMs of its projections, score products and feed-forward matrices, and PyTorch CPU.

    python benchmarks/bench_transformer.py [--quick] [--repeat 3] [--threads 1,2] [--no-torch]
"""

from __future__ import annotations

import _bench


def _tiny(data: dict) -> None:
    data["batch"] = 2


def specs(quick: bool):
    yield "transformer_encoder", _bench.load_sample("transformer_encoder.yaml", _tiny if quick else None)


if __name__ == "__main__":
    _bench.main(["transformer"], __doc__.splitlines()[0])
