"""A standalone activation layer (Keras' Activation, torch.nn.ReLU as a module), in the Dense contract.

Written with no kind key, the activation itself being the layer: `- activation: relu` or
`- activation: {leaky_relu: {alpha: 0.1}}` (the spec parser reads a layer mapping that names no kind
but has an `activation` as this kind). z is its input and y its output, so the statistics measure dead
units and saturation here, as on a layer with that activation. Elementwise activations act on any
input; softmax (over the last axis) only on flat and sequence inputs, not on a feature map's positions.
A fused loss (softmax or sigmoid with cross-entropy) passes dLoss/dz, which is dLoss/dx here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from initdiag import activations
from initdiag.layers.declare import InputError, LayerKind, Option


class ActivationCache(NamedTuple):
    x: np.ndarray
    z: np.ndarray  # x itself: the activation's input
    y: np.ndarray  # φ(x)


class ActivationLayer:
    """y = φ(x), φ any registered activation; see the module docstring."""

    kind = "activation"
    params: dict = {}

    def __init__(self, name: str, activation: activations.Activation, unit_axis: int = 1):
        self.name = name
        self.activation = activation
        self.params = {}
        self.unit_axis = unit_axis

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        y = self.activation.forward(x)
        return y, ActivationCache(x, x, y)

    def backward(self, dy: np.ndarray, cache: ActivationCache, need_dx: bool = True, *, dz=None):
        """dy (batch, *shape) -> (dx or None, {}); `dz` (a fused loss's dLoss/dz) is dx itself."""
        if not need_dx:
            return None, {}
        return (dz if dz is not None else self.activation.backward(cache.z, cache.y, np.asarray(dy))), {}

    def __repr__(self) -> str:
        return f"Activation({self.name!r}, {self.activation!r})"


def _parse(check, path, value):
    """{"activation": name or {name: params}} (as activations.Activation.written()), problems located at `path`."""
    from initdiag.speclayers import parse_activation  # (speclayers imports this package)

    parsed = parse_activation(check, path, value)
    return None if parsed is None else {"activation": activations.make(parsed.name, parsed.params).written()}


def _made(config) -> activations.Activation:
    written = config["activation"]
    return activations.make(*next(iter(written.items()))) if isinstance(written, dict) else activations.make(written)


def _feature_map(input_shape, config) -> bool:
    return len(input_shape) == 3 or (len(input_shape) == 2 and not config.get("sequence"))


def _output_shape(input_shape, config) -> tuple:
    function = _made(config)
    if not function.elementwise and _feature_map(input_shape, config):
        raise InputError(f"{function.name} acts on the last axis: it takes a flat input [features] or a sequence "
                         f"[steps, features], but its input is the feature map {list(input_shape)} (channels first)")
    return tuple(int(s) for s in input_shape)


def _build(spec, weights, bias, activation, context):
    # `activation` is the spec layer's own (speclayers reads it from this kind's config)
    return ActivationLayer(spec.name, activation, 1 if _feature_map(spec.input_shape, spec.config) else -1)


_TORCH = {"identity": ("Identity", {}), "relu": ("ReLU", {}), "leaky_relu": ("LeakyReLU", {"alpha": "negative_slope"}),
          "elu": ("ELU", {"alpha": "alpha"}), "selu": ("SELU", {}), "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}),
          "hard_sigmoid": ("Hardsigmoid", {}), "relu6": ("ReLU6", {}), "hardswish": ("Hardswish", {}),
          "hardtanh": ("Hardtanh", {}), "softplus": ("Softplus", {}), "softsign": ("Softsign", {}),
          "gelu": ("GELU", {"approximate": "approximate"}), "swish": ("SiLU", {}), "mish": ("Mish", {})}


def _torch(input_shape, config):
    """The torch.nn module of the activation (nn.Softmax(dim=-1) for softmax)."""
    import torch

    function = _made(config)
    if function.name == "softmax":
        return torch.nn.Softmax(dim=-1), {}
    module, names = _TORCH[function.name]
    return getattr(torch.nn, module)(**{names[key]: value for key, value in function.params.items()}), {}


KINDS = (LayerKind(
    "activation", ActivationLayer, "a standalone activation y = φ(x) (Keras' Activation, nn.ReLU as a module), written "
    "with no kind key: `- activation: relu`; softmax only on flat and sequence inputs",
    options=(Option("activation", "any_activation", "the activation: a name or {name: {parameter: value}} "
                    "(written as the layer's only key)", required=True),),
    parse=_parse, takes=("name", "ignore"), build=_build, example=((5,), {"leaky_relu": {"alpha": 0.1}}), torch=_torch,
    output_shape=_output_shape, bare="activation", unit_axis=1, reads_layout=True, rescales=True,
    memory_doc="its input and output", saturation_doc="the activation's rule, as on a layer with that activation",
),)
