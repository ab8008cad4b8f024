"""Layers, in the CS231n contract: forward(x) -> (out, cache); backward(dout, cache) -> (dx, grads).

Dense weights are (fan_in, fan_out) and the layer computes x @ W + b; PyTorch's nn.Linear
stores the transpose, (out, in), and computes x @ W.T + b, with the same fans.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag.activations import Activation
from initdiag.layers.declare import SEQUENCE, InputError, LayerKind, Option, Weight


class DenseCache(NamedTuple):
    x: np.ndarray  # (batch, fan_in) input
    z: np.ndarray  # (batch, fan_out) pre-activation x @ W + b
    y: np.ndarray  # (batch, fan_out) output φ(z)


class Dense:
    """y = φ(x @ W + b); W: (fan_in, fan_out), b: (fan_out,) or None. x is (batch, fan_in), or a sequence
    (batch, steps, fan_in) whose every token goes through the same W (nn.Linear on the last axis)."""

    kind = "dense"
    unit_axis = -1  # the last axis: a flat output's features, a sequence's per-token features

    @staticmethod
    def output_shape(input_shape, config) -> tuple:
        return (config["units"],)

    @staticmethod
    def fans(input_shape, config) -> tuple[int, int]:
        return input_shape[0], config["units"]

    def __init__(self, name: str, weights: np.ndarray, bias: np.ndarray | None, activation: Activation):
        self.name = name
        self.weights = weights
        self.bias = bias
        self.activation = activation

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, DenseCache]:
        z = x @ self.weights
        if self.bias is not None and self.bias.any():  # adding zeros would only cost a pass
            z += self.bias
        y = self.activation.forward(z)
        return y, DenseCache(x, z, y)

    def backward(self, dy: np.ndarray | None, cache: DenseCache, dz: np.ndarray | None = None, need_dx: bool = True):
        """dy = dLoss/dy (batch, fan_out) -> (dx or None, {"weights": dW, "bias": db}).

        A loss that pairs with the output activation (softmax with cross-entropy, sigmoid with
        binary cross-entropy) passes dz = dLoss/dz directly, as PyTorch's fused losses do, so
        saturated probabilities do not turn the chain rule into 0 · inf.
        """
        if dz is None:
            dz = self.activation.backward(cache.z, cache.y, dy)
        fan_in, fan_out = self.weights.shape
        rows = dz.reshape(-1, fan_out)  # a sequence's tokens are rows like a batch's samples
        grads = {"weights": cache.x.reshape(-1, fan_in).T @ rows}
        if self.bias is not None:
            grads["bias"] = rows.sum(axis=0)
        dx = dz @ self.weights.T if need_dx else None
        return dx, grads

    def __repr__(self) -> str:
        fan_in, fan_out = self.weights.shape
        return f"Dense({self.name!r}, {fan_in}->{fan_out}, {self.activation!r})"



def _parse(check, path, value):
    units = check.integer(path, value, minimum=1, what="width")
    return None if units is None else {"units": units}


def _output_shape(input_shape, config) -> tuple:
    if len(input_shape) == 2 and config.get("sequence"):  # per token, as nn.Linear on [steps, features]
        return (input_shape[0], config["units"])
    if len(input_shape) != 1:
        raise InputError(f"dense takes a flat input [features] or a sequence [steps, features], but its input is "
                         f"{list(input_shape)}: add a layer '- flatten: {{}}' (or global_avgpool) before it")
    return (config["units"],)


def _weights(input_shape, config) -> dict:
    return {"weights": Weight((input_shape[-1], config["units"]), "dense", (input_shape[-1], config["units"]))}


def _torch(input_shape, config):
    import torch

    return torch.nn.Linear(input_shape[-1], config["units"]), {"weights": "weight"}


KINDS = (LayerKind(
    "dense", Dense, "a fully connected layer: y = φ(x @ W + b); on a sequence [steps, features], per token",
    options=(Option("units", "int", "the output width (written as the bare value: dense: 256)", required=True, minimum=1),),
    parse=_parse, takes=("name", "activation", "init", "bias_init", "bias", "tie", "ignore"),
    build=lambda spec, weights, bias, activation, context: Dense(spec.name, weights, bias, activation),
    example=((6,), 4), torch=_torch, output_shape=_output_shape, weights=_weights, bare="units",
    unit_axis=-1, reads_layout=True, assumes_layout=SEQUENCE,  # a 2-D input no layer has laid out: [steps, features]
),)
