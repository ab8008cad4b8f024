"""LSTM family: the lstm_sequence (2 x 128 units over 40 steps, batch 64) and lstm_word_lm (10,000-word
vocabulary, 2 x 200 units over 35 steps, batch 20) samples, against the bare GEMMs of their input projections
and per-step recurrent products, and PyTorch CPU (nn.LSTM).

    python benchmarks/bench_lstm.py [--quick] [--repeat 3] [--threads 1,2] [--no-torch]
"""

from __future__ import annotations

import _bench


def _tiny_sequence(data: dict) -> None:
    data["batch"], data["input"] = 2, [5, 32]


def _tiny_lm(data: dict) -> None:
    data["batch"], data["input"] = 2, [5]
    data["layers"][0]["embedding"]["vocab"] = 100
    data["layers"][-1]["dense"] = 100


def specs(quick: bool):
    yield "lstm_sequence", _bench.load_sample("lstm_sequence.yaml", _tiny_sequence if quick else None)
    yield "lstm_word_lm", _bench.load_sample("lstm_word_lm.yaml", _tiny_lm if quick else None)


if __name__ == "__main__":
    _bench.main(["lstm"], __doc__.splitlines()[0])
