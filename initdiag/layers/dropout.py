"""Inverted dropout, in the Dense contract (see DropoutCache).

Each element is kept with probability 1 - p and then scaled by 1/(1 - p), so E[y] = x; the mask is
drawn from a numpy Generator (one draw per element), so a seeded run is reproducible (the mask is not
PyTorch's). eval (or p = 0) is the identity; p = 1 outputs zeros. No parameters.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from typing import NamedTuple

from initdiag.layers.declare import LayerKind, Option, checked
from initdiag.layers.norm import check_eval, own_options


class DropoutCache(NamedTuple):
    x: np.ndarray
    z: np.ndarray               # y itself
    y: np.ndarray
    mask: np.ndarray | None     # bool, True where kept; None when nothing was dropped (eval, p = 0)
    scale: float                # 1/(1 - p) (0 for p = 1)


class Dropout:
    """Inverted dropout with a mask from a numpy Generator; see the module docstring."""

    kind = "dropout"
    unit_axis = -1
    default_init: dict = {}
    params: dict = {}

    @classmethod
    def output_shape(cls, input_shape, config=None) -> tuple:
        shape = tuple(int(s) for s in input_shape)
        if not shape:
            raise ValueError("dropout expects a per-sample input with at least one axis, got ()")
        return shape

    @classmethod
    def parameter_shapes(cls, input_shape, config=None) -> dict:
        return {}

    @classmethod
    def fans(cls, input_shape, config=None) -> dict:
        return {}

    @classmethod
    def from_config(cls, name: str, params, config, rng=None, input_shape=None):
        if params:
            raise ValueError(f"dropout '{name}' has no parameters, got {', '.join(params)}")
        config = _normalize(config)
        return cls(name, config["p"], rng=rng, eval=config["eval"])

    def __init__(self, name: str, p: float = 0.5, rng: np.random.Generator | None = None, eval: bool = False):
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p <= 1:
            raise ValueError(f"dropout '{name}': p must be a probability in [0, 1], got {p!r}")
        self.name = name
        self.p = float(p)
        self.eval = bool(eval)
        self.params = {}
        if rng is None and not self.eval and 0 < self.p < 1:
            raise ValueError(f"dropout '{name}' needs a numpy.random.Generator (rng) to draw its mask in training mode")
        self.rng = rng

    def forward(self, x: np.ndarray):
        x = np.asarray(x)
        if self.eval or self.p == 0:
            return x, DropoutCache(x, x, x, None, 1.0)  # y is x: callers must not write into it
        if self.p == 1:
            y = np.zeros_like(x)
            return y, DropoutCache(x, y, y, np.zeros(x.shape, dtype=bool), 0.0)
        mask = self.rng.random(x.shape) >= self.p    # P(kept) = 1 - p
        scale = 1.0 / (1.0 - self.p)
        y = x * mask                                  # bool mask: keeps x's dtype
        y *= scale                                    # a Python float: cast to x's dtype
        return y, DropoutCache(x, y, y, mask, scale)

    def backward(self, dy: np.ndarray, cache: DropoutCache, need_dx: bool = True, *, dz=None):
        if dz is not None:
            raise ValueError(f"dropout '{self.name}' cannot be the output of a fused loss (dz)")
        if not need_dx:
            return None, {}
        dy = np.asarray(dy)
        if cache.mask is None:
            return dy, {}
        dx = dy * cache.mask
        dx *= cache.scale
        return dx, {}

    def kept_fraction(self, cache: DropoutCache) -> float:
        return 1.0 if cache.mask is None else float(np.count_nonzero(cache.mask) / max(cache.mask.size, 1))

    def saturation(self, cache: DropoutCache) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"Dropout({self.name!r}, p={self.p:g}{', eval' if self.eval else ''})"


def _normalize(raw) -> dict:
    """{p, eval} with defaults filled, from None, a mapping or the number p; ValueError names the choices."""
    if isinstance(raw, Real) and not isinstance(raw, bool):
        raw = {"p": raw}
    config = own_options("dropout", raw, OPTIONS)
    check_eval("dropout", config)
    p = config["p"]
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    config["p"] = float(p)
    return config


_parse = checked(_normalize)


def _build(spec, weights, bias, activation, context):
    config = dict(spec.config)
    config["eval"] = config["eval"] or context.eval
    layer = Dropout.from_config(spec.name, {}, config, rng=context.rng)
    layer.activation = activation  # identity: the statistics read every layer's activation
    return layer


def _torch(input_shape, config):
    import torch

    return torch.nn.Dropout(config["p"]), {}


OPTIONS = (Option("p", "number", "the drop probability (also as the bare value: dropout: 0.1)", default=0.5, minimum=0,
                  maximum=1),
           Option("eval", "bool", "run as at inference (the identity)", default=False))
KINDS = (LayerKind(
    "dropout", Dropout, "inverted dropout: each element kept with probability 1 - p, scaled by 1/(1 - p)",
    options=OPTIONS, parse=_parse, takes=("name", "ignore"), build=_build, example=((3, 4), {"p": 0.25}), torch=_torch,
    bare="p", unit_axis=-1, memory_doc="its input, output and mask", saturation_doc="none (no activation)",
),)
