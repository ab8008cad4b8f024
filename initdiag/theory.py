"""The mean-field (infinite-width) prediction of every layer's variances.

Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos", and
Schoenholz et al. 2017, "Deep Information Propagation". At infinite width a layer's pre-activations
h = x·W + b are Gaussian, h ~ N(μ_l, q_l), with the weights' variance σ_w,l², a constant bias μ_l
(a random one adds its variance σ_b,l²) and the input's second moment m_0 = E[x²]:

    q_1 = σ_w,1²·fan_in_1·m_0 + σ_b,1²
    q_l = σ_w,l²·fan_in_l·E[φ_{l-1}(h_{l-1})²] + σ_b,l²
    χ_l = σ_w,l²·fan_out_l·E[φ_l'(h_l)²]

so that Var(dLoss/dy_{l-1}) ≈ χ_l·Var(dLoss/dy_l) (the gradient independence assumption). The
expectations use the activations registry, so theory and simulation share their functions exactly.

Where the assumptions fail the prediction is None, for that layer and every later one: constant
weights (ones, constant c ≠ 0), weights with a non-zero mean, supplied or custom weights whose second
moment the caller did not pass, and a non-elementwise activation (softmax) for χ and what follows.
Zero weights are exact, not a failure: σ_w² = 0, so q = σ_b² and χ = 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from initdiag import activations
from initdiag.schemes import Fans

# Quadrature: composite Gauss–Legendre, not Gauss–Hermite. A fixed Hermite rule in z = (h - μ)/√q
# cannot see features of width 1/√q: for tanh at q = 20 its 100 nodes miss E[tanh'(h)²] by 15%,
# at q = 36 by 41%, at q = 500 by a factor of 7000, and a kink off its symmetric nodes (ReLU with
# a bias) costs ~1%. So the line is cut at unit steps of z (the Gaussian's scale), at graded steps
# of h (the activation's scale: sinh-spaced, 0.5 apart near 0 and geometric in the algebraic tails
# of softsign) and at the activation's kinks, with a 10-node rule on each piece (at most ~1000
# points): within ~1e-12 of adaptive quadrature for every activation, 1e-4 <= q <= 1e4.
_Z_RANGE = 10  # N(0,1) puts 1.5e-23 of its mass beyond ±10
_H_GRID = np.sinh(np.arange(-20.0, 20.25, 0.5))  # |h| up to 2.4e8; fixed, so built once
_ORDER = 10
_rule = None  # Gauss–Legendre nodes and weights on [-1, 1], built on first use


def _legendre() -> tuple:
    """Golub–Welsch: nodes are the eigenvalues of the Jacobi matrix of the Legendre recurrence,
    weights 2·(first eigenvector component)². numpy.linalg is loaded anyway; numpy.polynomial is not."""
    global _rule
    if _rule is None:
        k = np.arange(1.0, _ORDER)
        off = k / np.sqrt(4 * k * k - 1)
        nodes, vectors = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
        _rule = nodes, 2 * vectors[0] ** 2
    return _rule


def gaussian_rule(mean: float, var: float, kinks=()) -> tuple:
    """Points h and weights w with Σ w·f(h) ≈ E[f(h)] for h ~ N(mean, var), f smooth between `kinks`."""
    if var == 0:  # a point mass: exactly what a simulation with constant pre-activations computes
        return np.array([float(mean)]), np.ones(1)
    scale = math.sqrt(var)
    in_h = (np.concatenate([_H_GRID, np.asarray(kinks, dtype=float)]) - mean) / scale
    cuts = np.sort(np.concatenate([np.arange(-_Z_RANGE, _Z_RANGE + 1.0), in_h[np.abs(in_h) < _Z_RANGE]]))
    cuts = cuts[np.concatenate([[True], np.diff(cuts) > 1e-12])]  # no empty pieces
    nodes, weights = _legendre()
    half, mid = np.diff(cuts)[:, None] / 2, (cuts[1:] + cuts[:-1])[:, None] / 2
    z = (mid + half * nodes).ravel()
    w = (half * weights).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return mean + scale * z, w


def gaussian_moments(activation: activations.Activation, mean: float, var: float) -> tuple[float, float]:
    """(E[φ(h)²], E[φ'(h)²]) for h ~ N(mean, var), φ an elementwise activation instance."""
    h, w = gaussian_rule(mean, var, activation.kinks)
    y = activation.forward(h)
    slope = activation.backward(h, y, np.ones_like(h))
    return float(w @ (y * y)), float(w @ (slope * slope))


class LayerTheory(NamedTuple):
    preact_var_theory: float | None  # q_l, to compare with LayerStats.preact_var
    chi: float | None  # χ_l, to compare with grad_var[l-1] / grad_var[l]


def weight_variance(layer, measured: float | None = None) -> float | None:
    """σ_w² of a layer's weights, or None where no variance describes them.

    `measured` is the drawn weights' second moment, used only for supplied and custom inits.
    """
    init, fans = layer.init, Fans(layer.fan_in, layer.units)
    scheme, params = init.definition, init.params
    if scheme.affine is not None:
        # A mean m adds m·Σ_j x_j to every unit alike: a shared shift, not independent noise.
        return None if scheme.mean(fans, params) != 0 else scheme.std(fans, params) ** 2
    if init.scheme == "orthogonal":
        return params["gain"] ** 2 / max(fans)  # each unit-norm row or column spreads over max(fans) entries
    if init.scheme == "identity":
        # Exact for q, but h = x is only Gaussian if the layer's input is.
        return 1.0 / layer.fan_in
    if init.scheme == "zero" or (init.scheme == "constant" and params["value"] == 0):
        return 0.0
    if init.scheme in ("supplied", "custom"):
        return None if measured is None else float(measured)
    return None  # ones, constant c ≠ 0: every unit computes the same, c² is not a variance


def bias_moments(layer) -> tuple[float, float]:
    """(mean, variance) of a layer's bias, as network.build draws it."""
    if not layer.bias:
        return 0.0, 0.0
    scheme = getattr(layer, "inits", {}).get("bias", layer.bias_init)
    if hasattr(scheme, "definition"):  # a scheme that fits a vector (paramspec)
        from initdiag.paramspec import vector_moments

        return vector_moments(scheme, Fans(layer.fan_in, layer.units))
    if layer.bias_init is not None:
        return float(layer.bias_init), 0.0
    if layer.init.scheme == "torch_default":
        return 0.0, 1 / (3 * layer.fan_in)  # U(±1/sqrt(fan_in))
    return 0.0, 0.0


def mean_field(spec, input_second_moment: float, weight_second_moments: list | None = None) -> list[LayerTheory]:
    """LayerTheory per layer of `spec`, from the input's E[x²] (RunStats.input_second_moment).

    weight_second_moments: per layer, the drawn weights' E[W²] (weight_std² + weight_mean²) or None;
    only supplied and custom layers read it. Once a layer is None (see the module docstring), so is
    every later one; a q that overflows float64 is reported as inf, then None.
    """
    theory, second = [], float(input_second_moment)  # second: E[y²] of the previous layer's output
    for i, layer in enumerate(spec.layers):
        measured = weight_second_moments[i] if weight_second_moments else None
        # The recursion here is the dense layer's; other kinds end the prediction (for now).
        var_w = None if second is None or layer.kind != "dense" else weight_variance(layer, measured)
        if var_w is None:
            theory.append(LayerTheory(None, None))
            second = None
            continue
        bias_mean, bias_var = bias_moments(layer)
        q = var_w * layer.fan_in * second + bias_var
        activation = activations.make(layer.activation.name, layer.activation.params)
        if not (math.isfinite(q) and activation.elementwise):
            # softmax mixes a row, so no one-dimensional integral gives E[φ²] or χ; its q (from the
            # layer below) still holds. In practice it is the output layer: nothing is lost after it.
            theory.append(LayerTheory(q, None))
            second = None
            continue
        second, slope_sq = gaussian_moments(activation, bias_mean, q)
        theory.append(LayerTheory(q, var_w * layer.units * slope_sq))
    return theory


class Phase(NamedTuple):
    phase: str  # "ordered" | "critical" | "chaotic"
    chi: float  # geometric mean of χ over the hidden layers that have one
    depth_scale: float | None  # ξ = 1/|ln χ|: layers per factor e in gradient variance; None when critical


def phase(theory: list[LayerTheory], spec=None, tolerance: float = 1.0) -> Phase | None:
    """Order, chaos or the edge between them (Schoenholz et al. 2017, §3), for this network's depth.

    χ is the geometric mean of χ_l over the hidden layers, i.e. every layer but the last: the
    output layer's χ carries the head's width (fan_out = classes, often 10) and a loss gradient
    that need not be independent of its activation, neither of which says anything about the
    body. Over those k layers the gradient variance changes by χ^k, so the network is "critical"
    when k·|ln χ| < tolerance (default 1: less than a factor e from output to input); otherwise
    "ordered" (χ < 1, vanishing gradients) or "chaotic" (χ > 1, exploding), with ξ = 1/|ln χ| the
    number of layers over which the gradient variance shrinks or grows by e (the paper's
    ξ_∇ = -1/ln χ, which is negative in the chaotic phase, taken as a magnitude). The paper's own
    criterion, χ = 1 at the fixed point q*, ignores depth: tanh under Xavier sits exactly there
    yet loses gradient variance like 1/depth, which a finite network sees.

    With `spec`, each χ_l is first normalised to the paper's width-free σ_w²·E[φ'²] (σ_w² =
    fan_in·Var(w)), i.e. multiplied by fan_in/fan_out: χ_l itself compares gradient variances *per
    unit*, which change with width even when the gradient's energy is kept (He on a 784→256 layer
    has χ_l = 256/784 and loses nothing); the phase is a property of the scale, not of the widths.

    None if no hidden layer has a χ.
    """
    layers = spec.layers if spec is not None else [None] * len(theory)
    chis = [
        layer.chi * (shape.fan_in / shape.units if shape is not None else 1.0)
        for layer, shape in zip(theory[:-1], layers)
        if layer.chi is not None
    ]
    if not chis:
        return None
    if min(chis) <= 0:  # zero weights: nothing reaches the layers below
        return Phase("ordered", 0.0, 0.0)
    log_chi = sum(math.log(chi) for chi in chis) / len(chis)
    chi = math.exp(log_chi)
    if len(chis) * abs(log_chi) < tolerance:
        return Phase("critical", chi, None)
    return Phase("ordered" if log_chi < 0 else "chaotic", chi, 1 / abs(log_chi))
