"""Weightless layers that scale their input: a learnable per-unit scale (layer scale) and stochastic depth,
in the Dense contract of norm.py (forward(x) -> (y, cache); backward(dy, cache, need_dx) -> (dx, grads)).

``LayerScale(name, gamma, channels_first)``
    y = gamma ⊙ x, one gamma per unit: the channels of a feature map (batch, C, *spatial), broadcast over
    positions, or the last axis of a flat (batch, features) or sequence (batch, steps, features) input.
    ConvNeXt (Liu et al. 2022) starts gamma at 1e-6, CaiT (Touvron et al. 2021) at 1e-5 to 1e-4 by depth
    (0.1 up to 18 blocks); torchvision's CNBlock holds it as a (C, 1, 1) Parameter. gamma is the layer's
    only parameter (params["gamma"]); its initial value is the `value` option, not a scheme.
    Backward: dx = gamma ⊙ dy, dgamma = Σ dy ⊙ x over every axis but the unit axis.

``StochasticDepth(name, p, mode="row", rng=None, eval=False)``
    torchvision.ops.StochasticDepth (Huang et al. 2016, "drop path"): in training, y = x · m / (1 - p) with
    m ~ Bernoulli(1 - p) drawn once per sample (mode row: the whole sample kept or dropped) or once for
    the whole batch (mode batch), from the build context's dropout stream (``rng.random(size) >= p``);
    the identity in eval mode and for p = 0. p = 1 (every path dropped) is refused: nothing would flow.
    The backward pass uses the forward pass' mask (its DropoutCache).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple

import numpy as np

from initdiag.layers.declare import CHANNELS, InputError, LayerKind, Option, checked
from initdiag.layers.dropout import Dropout, DropoutCache
from initdiag.layers.norm import _cast_grads, check_eval, own_options


# ------------------------------------------------------------------------------- layer scale
class ScaleCache(NamedTuple):
    x: np.ndarray
    z: np.ndarray  # y itself
    y: np.ndarray


class LayerScale:
    """y = gamma ⊙ x per unit (channels first, or the last axis); see the module docstring."""

    kind = "layer_scale"

    @classmethod
    def parameter_shapes(cls, input_shape, config) -> dict:
        """gamma: one value per unit (what a `supplied:` file names)."""
        return {"gamma": (input_shape[0] if _channels_first(input_shape, config) else input_shape[-1],)}

    def __init__(self, name: str, gamma: np.ndarray, channels_first: bool = False):
        self.name = name
        self.params = {"gamma": np.asarray(gamma)}
        self.channels_first = bool(channels_first)
        self.unit_axis = 1 if channels_first else -1

    def _gamma(self, x: np.ndarray) -> np.ndarray:
        gamma = self.params["gamma"].astype(x.dtype, copy=False)
        axis = 1 if self.channels_first else x.ndim - 1
        if x.ndim < 2 or x.shape[axis] != gamma.shape[0]:
            raise ValueError(f"layer_scale '{self.name}' expects {gamma.shape[0]} units on axis {axis}, got {x.shape}")
        return gamma.reshape((-1,) + (1,) * (x.ndim - 2)) if self.channels_first else gamma

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        y = x * self._gamma(x)
        return y, ScaleCache(x, y, y)

    def backward(self, dy: np.ndarray, cache: ScaleCache, need_dx: bool = True, *, dz=None):
        """dy (batch, *shape) -> (dx or None, {"gamma": dgamma})."""
        if dz is not None:
            raise ValueError(f"layer_scale '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        axis = 1 if self.channels_first else dy.ndim - 1
        dgamma = np.sum(dy * cache.x, axis=tuple(a for a in range(dy.ndim) if a != axis))
        grads = _cast_grads({"gamma": dgamma}, self.params)
        return (dy * self._gamma(dy) if need_dx else None), grads

    def saturation(self, cache: ScaleCache) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"LayerScale({self.name!r}, {self.params['gamma'].shape[0]})"


def _scale_normalize(raw) -> dict:
    config = own_options("layer_scale", raw, SCALE_OPTIONS)
    value = config["value"]
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"layer_scale: value must be a finite number (ConvNeXt's 1e-6), got {value!r}")
    config["value"] = float(value)
    return config


def _channels_first(input_shape, config) -> bool:
    """Whether the units are the first axis (a feature map [C, ...]) rather than the last (flat, sequence)."""
    return len(input_shape) == 3 or (len(input_shape) == 2 and not config.get("sequence"))


def _scale_shape(input_shape, config) -> tuple:
    if len(input_shape) not in (1, 2, 3):
        raise InputError(f"layer_scale takes a flat, sequence or feature-map input, but its input is {list(input_shape)}")
    return tuple(int(s) for s in input_shape)


def _scale_build(spec, weights, bias, activation, context):
    channels_first = _channels_first(spec.input_shape, spec.config)
    units = spec.input_shape[0] if channels_first else spec.input_shape[-1]
    layer = LayerScale(spec.name, np.full(units, spec.config["value"], dtype=context.dtype), channels_first)
    layer.activation = activation  # identity: the statistics read every layer's activation
    return layer


def _scale_torch(input_shape, config):
    """A module with a gamma Parameter, one per unit: held as a vector (torchvision's CNBlock holds (C, 1, 1),
    which torch's fan rules would read as a weight) and broadcast over a feature map's positions."""
    import torch

    channels_first = _channels_first(input_shape, config)
    spatial = len(input_shape) - 1 if channels_first else 0

    class LayerScaleModule(torch.nn.Module):
        def __init__(self, units):
            super().__init__()
            self.gamma = torch.nn.Parameter(torch.full((units,), config["value"]))

        def forward(self, x):
            return x * self.gamma.view((-1,) + (1,) * spatial)

    return LayerScaleModule(input_shape[0] if channels_first else input_shape[-1]), {}


SCALE_OPTIONS = (Option("value", "number", "gamma's initial value (ConvNeXt's 1e-6; CaiT's 1e-5 to 1e-4 by depth)",
                        default=1e-6),)


# ------------------------------------------------------------------------------- stochastic depth
MODES = ("row", "batch")


class StochasticDepth(Dropout):
    """Stochastic depth (torchvision.ops.StochasticDepth); see the module docstring."""

    kind = "stochastic_depth"

    def __init__(self, name: str, p: float, mode: str = "row", rng: np.random.Generator | None = None,
                 eval: bool = False):
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 1:
            raise ValueError(f"stochastic_depth '{name}': p must be a probability in [0, 1), got {p!r}")
        if mode not in MODES:
            raise ValueError(f"stochastic_depth '{name}': mode must be one of {', '.join(MODES)}, got {mode!r}")
        super().__init__(name, p, rng=rng, eval=eval)
        self.mode = mode

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if self.eval or self.p == 0:
            return x, DropoutCache(x, x, x, None, 1.0)  # y is x: callers must not write into it
        size = (x.shape[0] if self.mode == "row" else 1,) + (1,) * (x.ndim - 1)
        mask = self.rng.random(size) >= self.p  # P(kept) = 1 - p, per sample (row) or per batch
        scale = 1.0 / (1.0 - self.p)
        y = x * mask
        y *= scale
        return y, DropoutCache(x, y, y, mask, scale)

    def __repr__(self) -> str:
        return f"StochasticDepth({self.name!r}, p={self.p:g}, {self.mode}{', eval' if self.eval else ''})"


def _depth_normalize(raw) -> dict:
    if isinstance(raw, Real) and not isinstance(raw, bool):
        raw = {"p": raw}
    config = own_options("stochastic_depth", raw, DEPTH_OPTIONS)
    if "p" not in config:
        raise ValueError("stochastic_depth: missing p, the probability of dropping a sample's path (e.g. 0.1)")
    check_eval("stochastic_depth", config)
    p = config["p"]
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 1:
        raise ValueError(f"stochastic_depth: p must be a probability in [0, 1) (p = 1 drops every path), got {p!r}")
    config["p"] = float(p)
    mode = config["mode"]
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise ValueError(f"stochastic_depth: mode must be one of {', '.join(MODES)}, got {mode!r}")
    config["mode"] = mode.strip().lower()
    return config


def _depth_build(spec, weights, bias, activation, context):
    config = spec.config
    layer = StochasticDepth(spec.name, config["p"], config["mode"], rng=context.rng, eval=config["eval"] or context.eval)
    layer.activation = activation  # identity: the statistics read every layer's activation
    return layer


def _depth_torch(input_shape, config):
    """torchvision.ops.StochasticDepth(p, mode) (torchvision is not a dependency: its forward, verbatim in effect)."""
    import torch

    class StochasticDepthModule(torch.nn.Module):
        def forward(self, x):
            if not self.training or config["p"] == 0.0:
                return x
            size = [x.shape[0] if config["mode"] == "row" else 1] + [1] * (x.ndim - 1)
            noise = torch.empty(size, dtype=x.dtype).bernoulli_(1.0 - config["p"])
            return x * noise.div_(1.0 - config["p"])

    return StochasticDepthModule(), {}


def _mask_elements(layer_spec, batch: int = 0) -> int:
    return batch if layer_spec.config.get("mode") == "row" else 1


DEPTH_OPTIONS = (
    Option("p", "number", "the probability of dropping a sample's path, 0 ≤ p < 1 (also as the bare value)", required=True,
           minimum=0, maximum=1, below_maximum=True),
    Option("mode", "choice", "row: one keep/drop per sample; batch: one for the whole batch", default="row", choices=MODES),
    Option("eval", "bool", "run as at inference (the identity)", default=False),
)
KINDS = (
    LayerKind("layer_scale", LayerScale, "a learnable per-unit scale y = gamma ⊙ x (ConvNeXt, CaiT), gamma starting at "
              "`value`; per channel on a feature map, per feature on flat and sequence inputs",
              options=SCALE_OPTIONS, parse=checked(_scale_normalize), takes=("name", "ignore"), build=_scale_build,
              example=((3, 4), {"value": 0.1}), torch=_scale_torch, output_shape=_scale_shape,
              unit_axis=1, reads_layout=True, assumes_layout=CHANNELS, rescales=True, holds_parameters=True, aliases=("layerscale",),
              memory_doc="its input and output", saturation_doc="none (no activation)"),
    LayerKind("stochastic_depth", StochasticDepth, "stochastic depth (torchvision.ops.StochasticDepth): y = x · m / (1 - p), "
              "m ~ Bernoulli(1 - p) per sample (row) or per batch; the identity in eval",
              options=DEPTH_OPTIONS, parse=checked(_depth_normalize), takes=("name", "ignore"), build=_depth_build,
              example=((3, 4), {"p": 0.25, "mode": "row"}), torch=_depth_torch, output_shape=Dropout.output_shape,
              bare="p", unit_axis=-1, aliases=("drop_path",), cache_elements=_mask_elements,
              memory_doc="its input, output and mask (one value per sample)", saturation_doc="none (no activation)"),
)
