"""Layers, in the CS231n contract: forward(x) -> (out, cache); backward(dout, cache) -> (dx, grads).

Dense weights are (fan_in, fan_out) and the layer computes x @ W + b; PyTorch's nn.Linear
stores the transpose, (out, in), and computes x @ W.T + b, with the same fans.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag.activations import Activation


class DenseCache(NamedTuple):
    x: np.ndarray  # (batch, fan_in) input
    z: np.ndarray  # (batch, fan_out) pre-activation x @ W + b
    y: np.ndarray  # (batch, fan_out) output φ(z)


class Dense:
    """y = φ(x @ W + b); W: (fan_in, fan_out), b: (fan_out,) or None."""

    kind = "dense"
    unit_axis = 1

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
        grads = {"weights": cache.x.T @ dz}
        if self.bias is not None:
            grads["bias"] = dz.sum(axis=0)
        dx = dz @ self.weights.T if need_dx else None
        return dx, grads

    def __repr__(self) -> str:
        fan_in, fan_out = self.weights.shape
        return f"Dense({self.name!r}, {fan_in}->{fan_out}, {self.activation!r})"


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


def layer_class(kind: str):
    """The registry of layer kinds, by spec key. The convolutional family is imported only when a
    spec uses it (start-up time of dense checks is measured)."""
    if kind == "dense":
        return Dense
    if kind == "residual":
        return Residual
    from initdiag.layers_conv import CONV_LAYERS

    if kind in CONV_LAYERS:
        return CONV_LAYERS[kind]
    from initdiag.layers_recurrent import RECURRENT_LAYERS

    if kind in RECURRENT_LAYERS:
        return RECURRENT_LAYERS[kind]
    from initdiag.layers_norm import NORM_LAYERS

    if kind in NORM_LAYERS:
        return NORM_LAYERS[kind]
    from initdiag.layers_attention import ATTENTION_LAYERS

    return ATTENTION_LAYERS[kind]


def make(layer_spec, weights, bias, activation, dtype=np.float32, rng=None, eval=False):
    """The layer object for a validated LayerSpec and its drawn parameters (`rng`: dropout's masks;
    `eval`: dropout off and batchnorm on its initial running statistics)."""
    if layer_spec.kind == "dense":
        return Dense(layer_spec.name, weights, bias, activation)
    kind_class = layer_class(layer_spec.kind)
    if layer_spec.kind in ("batchnorm", "layernorm", "dropout"):
        config = dict(layer_spec.config)
        if "eval" in config:
            config["eval"] = config["eval"] or eval
        if layer_spec.kind == "dropout":
            layer = kind_class.from_config(layer_spec.name, {}, config, rng=rng)
        else:
            params = kind_class.default_params(layer_spec.input_shape, config, dtype)
            layer = kind_class.from_config(layer_spec.name, params, config, layer_spec.input_shape)
        layer.activation = activation  # identity: the statistics read every layer's activation
        return layer
    if layer_spec.kind == "residual":
        config = layer_spec.config
        layer = Residual(layer_spec.name, config["scale"], weights, config["shortcut"], config["stride"], activation)
        layer.unit_axis = -1 if config.get("sequence") else 1  # a sequence's features, a feature map's channels
        return layer
    if layer_spec.kind == "embedding":
        # torch's fans on the (vocab, dim) table are (dim, vocab): the scheme drew (dim, vocab), one column per token
        layer = kind_class(layer_spec.name, {"weights": np.ascontiguousarray(weights.T)})
        layer.main_param, layer.weights, layer.bias = "weights", weights, None  # columns = tokens, for symmetry
        layer.activation = activation
        return layer
    if layer_spec.kind in ("rnn", "lstm", "gru", "attention", "transformer"):
        # `weights` is the params dict; its first weight matrix is what the statistics measure
        if layer_spec.kind in ("rnn", "lstm", "gru"):
            layer = kind_class.from_config(layer_spec.name, weights, layer_spec.config)
        else:
            layer = kind_class.from_config(layer_spec.name, weights, layer_spec.config, layer_spec.input_shape)
        layer.main_param = next(iter(kind_class.fans(layer_spec.input_shape, layer_spec.config)))
        layer.weights = layer.params[layer.main_param]
        layer.bias = layer.params.get(layer.main_param.replace("weights", "bias"))
        layer.unit_axis = -1  # (batch, [steps,] units)
        if layer_spec.kind == "attention":  # the others' activation is their own (cell, FFN)
            layer.activation = activation
        return layer
    if layer_spec.init is None:
        return kind_class(layer_spec.name, layer_spec.input_shape, layer_spec.config)
    return kind_class(layer_spec.name, weights, bias, activation, layer_spec.input_shape, layer_spec.config)
