"""The weight-initialization catalogue: every Deeplearning4j `WeightInit` value, with PyTorch/Keras aliases.

A variance-based scheme is data, not code: a *family* (the standard sample it scales:
N(0,1), U(-1,1) or a 2σ-truncated N(0,1)) and an affine map from the layer's fans to
(loc, mult), so `weights = loc + mult * standard_sample`. Schemes of one family differ
only by that map, which lets `compare` share one draw per family. Structured schemes
(constant, identity, orthogonal, supplied, custom) are functions of (rng, shape, fans, params).

Layout: weights are (fan_in, fan_out) and a layer computes x @ W (PyTorch stores the
transpose, (out, in), and computes x @ W.T; the fans are the same).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from initdiag import sampling
from initdiag.registry import canonical

FAMILY_SAMPLERS = {
    "normal": sampling.standard_normal,
    "uniform": sampling.standard_uniform,
    "truncated_normal": sampling.truncated_standard_normal,
}


class Fans(NamedTuple):
    fan_in: int
    fan_out: int

    def of(self, mode: str) -> float:
        if mode == "fan_in":
            return self.fan_in
        if mode == "fan_out":
            return self.fan_out
        return (self.fan_in + self.fan_out) / 2  # fan_avg


class Scheme(NamedTuple):
    name: str
    formula: str  # the exact distribution, as printed by `initdiag schemes`
    params: dict = {}  # parameter -> default (never mutated: callers copy it)
    positional: str | None = None  # parameter bound by a scalar value, e.g. {constant: 0.1}
    family: str | None = None  # random-affine schemes: which standard sample they scale
    affine: Callable | None = None  # (fans, params) -> (loc, mult)
    build: Callable | None = None  # structured: (rng, shape, fans, params, dtype) -> weights
    rule: tuple | None = None  # (mode, scale) of variance scaling, to match rules of thumb
    note: str = ""  # where frameworks differ

    def std(self, fans: Fans, params: dict) -> float | None:
        """The theoretical standard deviation of the weights, where the scheme has one."""
        if self.affine is None:
            return None
        _, mult = self.affine(fans, params)
        return abs(mult) * FAMILY_STD[self.family]

    def mean(self, fans: Fans, params: dict) -> float | None:
        if self.affine is None:
            return None
        return self.affine(fans, params)[0]


def _truncated_std(bound: float = 2.0) -> float:
    pdf = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * pdf / mass)


FAMILY_STD = {"normal": 1.0, "uniform": 1 / math.sqrt(3), "truncated_normal": _truncated_std()}


def variance_scaling(name: str, family: str, mode: str, scale: float, formula: str, note: str = "") -> Scheme:
    """Var(W) = gain² · scale / fan(mode), as jax.nn.initializers.variance_scaling."""

    def affine(fans: Fans, params: dict):
        variance = params["gain"] ** 2 * scale / fans.of(mode)
        return 0.0, math.sqrt(variance) / FAMILY_STD[family]

    return Scheme(name, formula, {"gain": 1.0}, family=family, affine=affine, rule=(mode, scale), note=note)


def _constant(value_of: Callable[[dict], float]):
    def build(rng, shape, fans, params, dtype):
        return np.full(shape, value_of(params), dtype=dtype)

    return build


def _identity(rng, shape, fans, params, dtype):
    return np.eye(shape[0], shape[1], dtype=dtype)


def _orthogonal(rng, shape, fans, params, dtype):
    """Saxe et al. 2014: QR of a Gaussian, with Q's columns' signs fixed by diag(R) so Q is Haar-uniform."""
    rows, cols = shape
    tall = sampling.standard_normal(rng, (max(rows, cols), min(rows, cols)), dtype)
    q, r = np.linalg.qr(tall)
    q *= np.where(np.diagonal(r) < 0, -1, 1).astype(dtype)
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q * dtype.type(params["gain"]), dtype=dtype)


def _supplied(rng, shape, fans, params, dtype):
    return np.load(params["path"], allow_pickle=False).astype(dtype, copy=False)


def import_custom(target: str) -> Callable:
    """Import 'package.module:function'. Runs user code: only called with --allow-custom."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, attr)
    if not callable(function):
        raise TypeError(f"'{target}' is not callable")
    return function


def _custom(rng, shape, fans, params, dtype):
    weights = params["function"](tuple(shape), fans.fan_in, fans.fan_out, rng)
    weights = np.asarray(weights, dtype=dtype)
    if weights.shape != tuple(shape):
        raise ValueError(
            f"custom init returned shape {list(weights.shape)}, expected [fan_in, fan_out] = {list(shape)}"
        )
    return weights


def _normal(fans, params):
    return params["mean"], params["std"]


def _uniform(fans, params):
    return (params["low"] + params["high"]) / 2, (params["high"] - params["low"]) / 2


_KERAS_TRUNC = "Keras/JAX draw it from a normal truncated at 2σ, rescaled to this variance"

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        variance_scaling("xavier", "normal", "fan_avg", 1.0, "N(0, 2/(fan_in+fan_out))", _KERAS_TRUNC),
        variance_scaling("xavier_uniform", "uniform", "fan_avg", 1.0, "U(±sqrt(6/(fan_in+fan_out)))"),
        variance_scaling("relu", "normal", "fan_in", 2.0, "N(0, 2/fan_in)", _KERAS_TRUNC),
        variance_scaling("relu_uniform", "uniform", "fan_in", 2.0, "U(±sqrt(6/fan_in))"),
        variance_scaling("lecun_normal", "normal", "fan_in", 1.0, "N(0, 1/fan_in)", _KERAS_TRUNC),
        variance_scaling(
            "lecun_uniform", "uniform", "fan_in", 1.0, "U(±sqrt(3/fan_in))",
            "DL4J's code uses the bound 3/sqrt(fan_in); initdiag follows the page",
        ),
        variance_scaling("var_scaling_normal_fan_in", "normal", "fan_in", 1.0, "N(0, 1/fan_in)"),
        variance_scaling("var_scaling_normal_fan_out", "normal", "fan_out", 1.0, "N(0, 1/fan_out)"),
        variance_scaling("var_scaling_normal_fan_avg", "normal", "fan_avg", 1.0, "N(0, 2/(fan_in+fan_out))"),
        variance_scaling(
            "var_scaling_uniform_fan_in", "uniform", "fan_in", 1.0, "U(±sqrt(3/fan_in))",
            "DL4J's code uses the bound 3/sqrt(fan); initdiag follows the page",
        ),
        variance_scaling("var_scaling_uniform_fan_out", "uniform", "fan_out", 1.0, "U(±sqrt(3/fan_out))"),
        variance_scaling("var_scaling_uniform_fan_avg", "uniform", "fan_avg", 1.0, "U(±sqrt(6/(fan_in+fan_out)))"),
        variance_scaling("sigmoid_uniform", "uniform", "fan_avg", 16.0, "U(±4·sqrt(6/(fan_in+fan_out)))"),
        variance_scaling("xavier_fan_in", "normal", "fan_in", 1.0, "N(0, 1/fan_in)"),
        variance_scaling("xavier_legacy", "normal", "fan_avg", 0.5, "N(0, 1/(fan_in+fan_out))"),
        variance_scaling(
            "torch_default", "uniform", "fan_in", 1 / 3, "U(±1/sqrt(fan_in)); bias U(±1/sqrt(fan_in))",
            "nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5))",
        ),
        Scheme(
            "normal", "N(mean, std²); default N(0, 1)", {"mean": 0.0, "std": 1.0}, family="normal",
            affine=_normal, note="DL4J's code draws NORMAL as N(0, 1/fan_in); initdiag follows the page",
        ),
        Scheme("uniform", "U(low, high); default U(-1, 1)", {"low": -1.0, "high": 1.0}, family="uniform", affine=_uniform),
        Scheme(
            "truncated_normal", "N(mean, std²) redrawn outside mean ± 2·std (so its std is 0.8796·std)",
            {"mean": 0.0, "std": 1.0}, family="truncated_normal", affine=_normal,
        ),
        Scheme("zero", "0", build=_constant(lambda p: 0.0)),
        Scheme("ones", "1", build=_constant(lambda p: 1.0)),
        Scheme("constant", "c, everywhere", {"value": None}, positional="value", build=_constant(lambda p: p["value"])),
        Scheme("identity", "the identity matrix; square layers only", build=_identity),
        Scheme("orthogonal", "a Haar-random orthogonal matrix × gain", {"gain": 1.0}, build=_orthogonal),
        Scheme("supplied", "the given .npy array, shape [fan_in, fan_out]", {"path": None}, positional="path", build=_supplied),
        Scheme(
            "custom", "f(shape, fan_in, fan_out, rng) from 'package.module:function' (needs --allow-custom)",
            {"target": None}, positional="target", build=_custom,
        ),
    ]
}

ALIASES = {
    "glorot_normal": "xavier",
    "xavier_normal": "xavier",
    "glorot_uniform": "xavier_uniform",
    "he_normal": "relu",
    "kaiming_normal": "relu",
    "he_uniform": "relu_uniform",
    "kaiming_uniform": "relu_uniform",
    "pytorch_default": "torch_default",
    "zeros": "zero",
    "eye": "identity",
}


def lookup(name: str) -> Scheme:
    return SCHEMES[canonical(name, SCHEMES, ALIASES, "scheme")]


def aliases_of(name: str) -> list[str]:
    return [alias for alias, target in ALIASES.items() if target == name]


def same_variance_rule(a: str, b: str) -> bool:
    """Whether schemes a and b target the same variance (e.g. relu and relu_uniform), for rules of thumb."""
    if a == b:
        return True
    rule_a, rule_b = SCHEMES[a].rule, SCHEMES[b].rule
    return rule_a is not None and rule_a == rule_b


def initial_weights(scheme: Scheme, params: dict, rng, shape, dtype, standard: np.ndarray | None = None,
                    fans: Fans | None = None) -> np.ndarray:
    """Draw a weight matrix of `shape` for `scheme` from `rng`: (fan_in, fan_out) for a dense layer.

    `fans` default to the matrix's shape; a convolution's differ (PyTorch's fan_out counts the
    kernel area). `standard`, if given, is the family's standard sample already drawn from this
    `rng` (shared by the schemes of a family in `compare`); it is scaled into a new array.
    """
    dtype = np.dtype(dtype)
    fans = fans or Fans(shape[0], shape[1])
    if scheme.build is not None:
        return scheme.build(rng, shape, fans, params, dtype)
    loc, mult = scheme.affine(fans, params)
    if standard is not None:
        weights = standard * dtype.type(mult)
    else:
        weights = FAMILY_SAMPLERS[scheme.family](rng, shape, dtype)
        weights *= dtype.type(mult)
    if loc:
        weights += dtype.type(loc)
    return weights
