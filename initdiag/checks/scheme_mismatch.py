"""scheme-activation-mismatch: the rules of thumb advise another scheme for a layer's activation (info)."""

from __future__ import annotations

from initdiag import activations, schemes
from initdiag.checks import Check, Finding, FindingCode
from initdiag.checks._architecture import acting_activation
from initdiag.checks._shared import better_scheme
from initdiag.layers import LAYERS


def mismatches(run, spec, t=None, phase=None) -> list:
    """One info finding per (init, activation) pair the rules of thumb advise against, naming its layers."""
    groups: dict = {}
    for layer in spec.layers:
        init = layer.init
        if init is None or init.scheme in ("supplied", "custom") or LAYERS[layer.kind].table:
            continue  # embeddings are a lookup, outside the rules-of-thumb table (torch's default is N(0, 1))
        if init.params.get("gain", 1.0) != 1.0:
            continue  # a chosen gain is a calibration (recommend --calibrate writes them), not a rule of thumb missed
        activation = acting_activation(spec, layer.index)  # a standalone activation layer's, after an identity layer
        if better_scheme(layer, activation):
            groups.setdefault((init.display, activation.name), []).append(layer)
    findings = []
    for (init, activation_name), layers in groups.items():
        recommended = activations.ACTIVATIONS[activation_name].recommended
        advice = " or ".join(f"{name} ({schemes.SCHEMES[name].formula})" for name in recommended)
        names = layers[0].name if len(layers) == 1 else f"{layers[0].name}..{layers[-1].name} ({len(layers)} layers)"
        findings.append(Finding(
            "info", "scheme-activation-mismatch", layers[0].name,
            f"{names}: {init} with {activation_name}: {advice} is recommended",
            f"set init: {recommended[0]} on {'these layers' if len(layers) > 1 else 'this layer'} (rules of thumb: "
            "relu/He for ReLU-like, xavier for tanh/sigmoid/softmax/identity, lecun_normal for SELU)",
            layers[0].index,
        ))
    return findings


CHECK = Check(
    order=94,
    run_order=20,
    codes=(FindingCode("scheme-activation-mismatch", ("info",), "The init scheme does not match the activation",
                       "Rules of thumb: relu/He for ReLU-like, xavier for tanh/sigmoid/softmax/identity, lecun_normal for SELU.",
                       flag="hint", panel=None),),
    find=mismatches,
)
