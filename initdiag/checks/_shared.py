"""Helpers the check modules share: severities from thresholds, finding construction, number wording,
the rules-of-thumb scheme a hint may recommend, and the gradient energy two checks compare."""

from __future__ import annotations

import math

import numpy as np

from initdiag import activations, schemes
from initdiag.checks import Finding
from initdiag.numbers import compact


def level(magnitude: float, warning: float, error: float) -> str | None:
    """The severity a magnitude reaches (a factor either way, or 1/a share)."""
    return "error" if magnitude > error else "warning" if magnitude > warning else None


def finding(severity, code, layer, message, hint) -> Finding:
    """A finding on `layer` (a LayerStats or a spec layer; None: network-wide)."""
    return Finding(severity, code, layer.name if layer else None, message, hint, layer.index if layer else None)


def finite(*values) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)


def forward_finite(run) -> bool:
    """Whether the forward pass stayed finite: an overflow in the backward pass only still lets the
    activations tell their drift and contrast."""
    return all(finite(layer.preact_var, layer.act_mean, layer.act_var) for layer in run.layers)


def percent(fraction: float) -> str:
    return f"{fraction:.0%}" if round(fraction * 100, 1).is_integer() else f"{fraction:.1%}"


def ratio_text(ratio: float) -> str:
    """7.5e4x, 1/1.33e3 of, 0x (no signal left): a factor relative to what follows it."""
    return f"{compact(ratio)}x" if ratio >= 1 else f"1/{compact(1 / ratio)} of" if ratio > 0 else "0x (no signal left)"


def better_scheme(layer_spec, activation=None) -> str | None:
    """The rules-of-thumb scheme for the layer's activation (or `activation`, an ActivationSpec: the one its output
    meets) when its own scheme is not one of them, else None: a hint never recommends what the layer already has."""
    init, activation = layer_spec.init, activations.ACTIVATIONS.get((activation or layer_spec.activation).name)
    recommended = activation.recommended if activation is not None else ()
    if init is None or not recommended or any(schemes.same_variance_rule(init.scheme, good) for good in recommended):
        return None
    return recommended[0]


def gradient_energy(layer, spec_layer) -> float:
    """Per-sample energy of dLoss/d(layer output): its variance times the output's size. Conserved through
    a layer whose χ = 1 whatever the layer's width, positions or kind (He conserves it for ReLU), so a conv
    stem and a dense head compare like for like, as the weight gradients (summed over positions) do not."""
    return layer.grad_var * float(np.prod(spec_layer.output_shape))
