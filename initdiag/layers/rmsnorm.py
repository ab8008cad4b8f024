"""Root-mean-square normalisation (Zhang & Sennrich 2019; Llama's, T5's), in the Dense contract of norm.py.

``RMSNorm(name, params, eps=1e-6)``
    Over the last axis of each sample / token: y = x / sqrt(mean(x², last axis) + eps) · gamma, no mean
    subtracted and no beta; torch.nn.RMSNorm(features, eps) with elementwise_affine. Input (features,) or
    (steps, features) (per token). params: "gamma" (features,), default 1. eps defaults to 1e-6, Hugging
    Face Llama's (LlamaRMSNorm); torch.nn.RMSNorm's own default (eps=None) is the dtype's machine epsilon,
    T5 uses 1e-6 too. Backward: with x̂ = x·r, r = 1/sqrt(mean(x²) + eps),
    dx = r · (dx̂ - x̂ · mean(dx̂ · x̂)), dx̂ = dy · gamma; dgamma = Σ dy · x̂ over every axis but the last.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple

import numpy as np

from initdiag.layers.declare import SEQUENCE, LayerKind, Option, checked
from initdiag.layers.norm import _cast_grads, _float_dtype, _shape_str, own_options


class RMSCache(NamedTuple):
    x: np.ndarray
    z: np.ndarray        # x̂ = x · inv_rms, the normalised value
    y: np.ndarray        # gamma · x̂
    inv_rms: np.ndarray  # 1/sqrt(mean(x², -1) + eps), (batch, ..., 1)


class RMSNorm:
    """RMS normalisation over the last axis (torch.nn.RMSNorm(last dim)); see the module docstring."""

    kind = "rmsnorm"
    unit_axis = -1
    default_init = {"gamma": "ones"}

    @classmethod
    def parameter_shapes(cls, input_shape, config=None) -> dict:
        """gamma: one value per feature of the last axis (what a `supplied:` file names)."""
        return {"gamma": (input_shape[-1],)}

    @staticmethod
    def default_params(shape, dtype) -> dict:
        """gamma 1 (a transformer block's norms: initdiag.layers.transformer)."""
        return {"gamma": np.ones(shape[-1], dtype=dtype)}

    def __init__(self, name: str, params: dict, eps: float = 1e-6):
        self.name = name
        unknown = sorted(set(params) - {"gamma"})
        if unknown:
            raise ValueError(f"rmsnorm '{name}': unknown parameter(s) {', '.join(unknown)}; valid: gamma")
        gamma = np.asarray(params["gamma"])
        if gamma.ndim != 1 or gamma.dtype.kind != "f":
            raise ValueError(f"rmsnorm '{name}': gamma must be a float vector, got {gamma.dtype} {_shape_str(gamma.shape)}")
        self.params = {"gamma": gamma}
        self.features = gamma.shape[0]
        self.eps = float(eps)

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[-1] != self.features:
            raise ValueError(f"rmsnorm '{self.name}' expects input (batch, ..., {self.features}), got {_shape_str(x.shape)}")
        dtype = _float_dtype(x)
        x = x.astype(dtype, copy=False)
        inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + dtype.type(self.eps))
        xhat = x * inv_rms
        y = xhat * self.params["gamma"].astype(dtype, copy=False)
        return y, RMSCache(x, xhat, y, inv_rms)

    def backward(self, dy: np.ndarray, cache: RMSCache, need_dx: bool = True, *, dz=None):
        """dy (batch, ..., features) -> (dx or None, {"gamma": dgamma})."""
        if dz is not None:
            raise ValueError(f"rmsnorm '{self.name}' cannot be the output of a fused loss (dz)")
        dy = np.asarray(dy)
        grads = _cast_grads({"gamma": np.sum(dy * cache.z, axis=tuple(range(dy.ndim - 1)))}, self.params)
        if not need_dx:
            return None, grads
        dxhat = dy * self.params["gamma"].astype(cache.y.dtype, copy=False)
        dx = dxhat - cache.z * np.mean(dxhat * cache.z, axis=-1, keepdims=True)
        dx *= cache.inv_rms
        return dx, grads

    def saturation(self, cache: RMSCache) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"RMSNorm({self.name!r}, {self.features}, eps={self.eps:g})"


def _normalize(raw) -> dict:
    config = own_options("rmsnorm", raw, OPTIONS)
    eps = config["eps"]
    if isinstance(eps, bool) or not isinstance(eps, Real) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"rmsnorm: eps must be a positive number (Hugging Face Llama's is 1e-6), got {eps!r}")
    config["eps"] = float(eps)
    return config


def _output_shape(input_shape, config) -> tuple:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(f"rmsnorm expects a per-sample input of shape (features,) or (steps, features), got {_shape_str(shape)}")
    return shape


def _build(spec, weights, bias, activation, context):
    gamma = np.ones(spec.input_shape[-1], dtype=context.dtype)  # as torch.nn.RMSNorm initialises it
    layer = RMSNorm(spec.name, {"gamma": gamma}, eps=spec.config["eps"])
    layer.activation = activation  # identity: the statistics read every layer's activation
    return layer


def _torch(input_shape, config):
    import torch

    return torch.nn.RMSNorm(input_shape[-1], eps=config["eps"]), {}


OPTIONS = (Option("eps", "number", "added to the mean square (Hugging Face Llama's 1e-6; torch's default is the dtype's "
                  "machine epsilon)", default=1e-6, minimum=0, exclusive=True),)
KINDS = (LayerKind(
    "rmsnorm", RMSNorm, "RMS normalisation over the last axis, x / sqrt(mean(x²) + eps) · gamma (nn.RMSNorm), gamma 1",
    options=OPTIONS, parse=checked(_normalize), takes=("name", "ignore"), build=_build, example=((3, 5), {"eps": 1e-5}),
    torch=_torch, output_shape=_output_shape, unit_axis=-1, assumes_layout=SEQUENCE, aliases=("rms_norm",),
    normalizes=True, memory_doc="its input, normalised value and output",
    saturation_doc="none (a normalisation does not saturate)",
),)
