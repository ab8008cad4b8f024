"""CNN family: the CIFAR CNN, VGG-11 (batch 16, 64x64) and ResNet-20 (no batchnorm) samples, against the bare
im2col GEMMs of their convolutions and PyTorch CPU.

    python benchmarks/bench_cnn.py [--quick] [--repeat 3] [--threads 1,2] [--no-torch]
"""

from __future__ import annotations

import _bench

SAMPLES = ("cifar_cnn_relu.yaml", "vgg11_batch16.yaml", "resnet20_no_bn.yaml")


def _tiny(data: dict) -> None:
    """Batch 2 of 3x32x32 through at most 8 filters and 32 units per layer."""
    data["batch"], data["input"] = 2, [3, 32, 32]
    layers = list(data["layers"])
    while layers:
        layer = layers.pop()
        layers += layer.get("residual", []) if isinstance(layer.get("residual"), list) else []
        if isinstance(layer.get("conv2d"), dict):
            layer["conv2d"]["filters"] = min(layer["conv2d"]["filters"], 8)
        if isinstance(layer.get("dense"), int) and layer is not data["layers"][-1]:
            layer["dense"] = min(layer["dense"], 32)


def specs(quick: bool):
    for name in SAMPLES:
        yield name.removesuffix(".yaml"), _bench.load_sample(name, _tiny if quick else None)


if __name__ == "__main__":
    _bench.main(["cnn"], __doc__.splitlines()[0])
