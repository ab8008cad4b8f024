"""Dense family: 24 x dense 1024 ReLU (He init), batch 512, float32, against bare matmuls and PyTorch CPU.

    python benchmarks/bench_dense.py [--quick] [--repeat 3] [--threads 1,2] [--no-torch]
"""

from __future__ import annotations

import _bench


def make_spec(layers: int, width: int, batch: int):
    text = f"name: dense\ninput: [{width}]\nbatch: {batch}\ndefaults: {{init: relu, activation: relu}}\nlayers:\n"
    text += f"  - dense: {width}\n" * layers
    return _bench.parse_text(text, "dense.yaml")


def specs(quick: bool):
    layers, width, batch = (3, 64, 16) if quick else (24, 1024, 512)
    yield f"{layers}x{width} relu b{batch}", make_spec(layers, width, batch)


if __name__ == "__main__":
    _bench.main(["dense"], __doc__.splitlines()[0])
