"""GPT-2-small-like family: sample_specs/gpt2_small_like.yaml (12 blocks of dim 768, 64 tokens, batch 4, the
50,257-word head tied to the embedding), against the bare GEMMs of its blocks and head, and PyTorch CPU.

    python benchmarks/bench_gpt2.py [--quick] [--repeat 3] [--threads 1,2] [--no-torch]
"""

from __future__ import annotations

import _bench


def _tiny(data: dict) -> None:
    """Two blocks of dim 64 over 8 tokens of a 500-word vocabulary, batch 2."""
    data["batch"], data["input"] = 2, [8]
    data["layers"][0]["embedding"] = {"vocab": 500, "dim": 64}
    blocks = [layer for layer in data["layers"] if "transformer" in layer][:2]
    for block in blocks:
        block["transformer"].update(dim=64, heads=4, ffn=256)
    data["layers"] = data["layers"][:2] + blocks + data["layers"][-2:]
    data["layers"][-1]["dense"] = 500


def specs(quick: bool):
    yield "gpt2_small_like", _bench.load_sample("gpt2_small_like.yaml", _tiny if quick else None)


if __name__ == "__main__":
    _bench.main(["gpt2"], __doc__.splitlines()[0])
