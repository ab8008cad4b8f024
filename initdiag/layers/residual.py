"""The end of a residual block, y = shortcut(x_in) + scale · f(x_in), in the CS231n contract with the
block's input beside the branch's (forward(x, skip), backward -> (d_branch, d_skip, grads))."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag.layers.declare import LayerKind, Option, Weight

class ResidualCache(NamedTuple):
    x: np.ndarray  # the branch's output f(x_in)
    skip: np.ndarray  # the block's input x_in
    z: np.ndarray  # shortcut(x_in) + scale · f(x_in)
    y: np.ndarray  # the same: a residual sum has no activation


class Residual:
    """The end of a residual block: y = shortcut(x_in) + scale · f(x_in), where f is the block's inner
    layers (run before it) and shortcut is the identity or a projection: a dense layer (x_in @ W) or
    a strided 1x1 convolution. Forward and backward take the block's input beside the branch's."""

    kind = "residual"
    unit_axis = 1  # channels (or a flat input's features); make() sets -1 for a sequence's features

    def __init__(self, name: str, scale: float, weights: np.ndarray | None, shortcut: str | None, stride: int, activation):
        self.name, self.scale, self.weights, self.bias = name, scale, weights, None
        self.shortcut, self.stride, self.activation = shortcut, stride, activation

    def _strided(self, skip: np.ndarray) -> np.ndarray:
        return skip[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (skip.ndim - 2)]

    def _project(self, skip: np.ndarray) -> np.ndarray:
        if self.shortcut is None:
            return skip
        if self.shortcut == "dense":
            return skip @ self.weights
        return np.moveaxis(np.moveaxis(self._strided(skip), 1, -1) @ self.weights, -1, 1)

    def forward(self, x: np.ndarray, skip: np.ndarray):
        y = self._project(skip) + self.scale * x
        return y, ResidualCache(x, skip, y, y)

    def backward(self, dy: np.ndarray, cache: ResidualCache, need_dx: bool = True):
        """-> (dLoss/d branch output, dLoss/d block input through the shortcut, grads)."""
        d_branch = self.scale * dy
        if self.shortcut is None:
            return d_branch, dy, {}
        if self.shortcut == "dense":
            return d_branch, dy @ self.weights.T, {"weights": cache.skip.T @ dy}
        channels_last = np.moveaxis(dy, 1, -1)
        strided = np.moveaxis(self._strided(cache.skip), 1, -1)
        grads = {"weights": strided.reshape(-1, strided.shape[-1]).T @ channels_last.reshape(-1, channels_last.shape[-1])}
        d_skip = np.zeros_like(cache.skip)
        d_skip[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (d_skip.ndim - 2)] = np.moveaxis(
            channels_last @ self.weights.T, -1, 1)
        return d_branch, d_skip, grads



SHORTCUTS = ("dense", "conv")


def _build(spec, weights, bias, activation, context):
    config = spec.config
    layer = Residual(spec.name, config["scale"], weights, config["shortcut"], config["stride"], activation)
    layer.unit_axis = -1 if config.get("sequence") else 1  # a sequence's features, a feature map's channels
    return layer


def _output_shape(input_shape, config) -> tuple:
    """A block's output is its branch's; alone (the contract tests' example) the branch keeps the shape,
    or a projection shortcut maps a flat input to `units` features."""
    return (config["units"],) if config.get("shortcut") == "dense" else tuple(input_shape)


def _weights(input_shape, config) -> dict | None:
    """The projection shortcut: dense, (in, out) as nn.Linear; conv, a 1x1 kernel (in, out) as nn.Conv."""
    if config.get("shortcut") is None:
        return {}
    rows, cols = input_shape[0], config.get("units", input_shape[0])
    return {"weights": Weight((rows, cols), "projection", (rows, cols))}


def _torch(input_shape, config):
    import torch

    if config.get("shortcut") == "dense":
        return torch.nn.Linear(input_shape[0], config["units"], bias=False), {"weights": "weight"}
    if config.get("shortcut") == "conv":
        conv = (torch.nn.Conv1d, torch.nn.Conv2d)[len(input_shape) - 2]
        return conv(input_shape[0], config.get("units", input_shape[0]), 1, stride=config["stride"], bias=False), {
            "weights": "weight"}
    return torch.nn.Identity(), {}


def _parse(check, path, value):
    return dict(value)


KINDS = (LayerKind(
    "residual", Residual, "a residual block: y = shortcut(x) + scale·f(x), f its inner layers",
    options=(Option("scale", "number", "α in y = shortcut(x) + α·f(x)", default=1.0),
             Option("shortcut", "choice", "project the skip path: dense (flat input) or conv (strided 1x1)",
                    choices=SHORTCUTS)),
    parse=_parse, takes=("name", "ignore"), build=_build,
    example=((5,), {"scale": 0.5, "shortcut": "dense", "stride": 1, "units": 3}), torch=_torch,
    output_shape=_output_shape, weights=_weights, block=True, adds_to_stream=lambda config: True,
    memory_doc="its input (the skip) and output", saturation_doc="none: a sum has no activation",
),)
