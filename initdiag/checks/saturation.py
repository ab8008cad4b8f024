"""saturation: a layer's outputs sit in the flat part of a saturating activation (or attention rows
put all their weight on one position). README: "Findings and thresholds"."""

from __future__ import annotations

from initdiag.checks import Check, FindingCode, Threshold
from initdiag.checks._architecture import OWN_SATURATION_KINDS
from initdiag.checks._shared import better_scheme, finding, percent

FUSED_LOSSES = ("cross_entropy", "binary_cross_entropy")


def saturation(run, spec, t, phase=None) -> list:
    findings = []
    for layer, layer_spec in zip(run.layers, spec.layers):
        level = "error" if layer.saturation > t.saturation_error else "warning" if layer.saturation > t.saturation_warning else None
        fused_output = layer.index == len(run.layers) - 1 and run.loss in FUSED_LOSSES
        if level == "error" and fused_output:
            level = "warning"  # a fused loss's gradient, p - y, does not vanish when the output saturates
        if not level:
            continue
        attention = layer.kind in OWN_SATURATION_KINDS
        what = ("attention rows are saturated (largest weight > 0.99)" if attention else
                f"samples get a near-certain prediction ({layer.activation}): the logits are large" if fused_output else
                f"outputs are saturated ({layer.activation})")
        hint = ("the attention logits are too large: smaller query/key weights (xavier, or a 1/sqrt(dim) scale)" if attention else
                "the loss's gradient still flows (p - y), but the first steps go to undoing the confidence: a smaller "
                "init for this layer (xavier, or zero as for many heads), or a smaller signal below it" if fused_output else
                _hint(layer_spec))
        findings.append(finding(level, "saturation", layer, f"{layer.name}: {percent(layer.saturation)} of {what}", hint))
    return findings


def _hint(layer_spec) -> str:
    better = better_scheme(layer_spec)
    if better:
        return f"saturated units pass almost no gradient: init: {better} for {layer_spec.activation.name} (now {layer_spec.init.display})"
    return ("saturated units pass almost no gradient; the scheme already matches the activation, so the layer's input "
            "is large: normalize it (layernorm/batchnorm before the layer) or lower the gain")


SATURATED = "above this fraction of a layer's outputs saturated"

CHECK = Check(
    order=70,
    codes=(FindingCode("saturation", ("warning", "error"), "Units sit in the flat part of a saturating activation",
                       "Saturated tanh/sigmoid units pass almost no gradient; shrink the weights (xavier) or normalize inputs.",
                       flag="sat", panel="units"),),
    thresholds=(Threshold("saturation_warning", 0.10, SATURATED),
                Threshold("saturation_error", 0.99, SATURATED)),
    find=saturation,
)
