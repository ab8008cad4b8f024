"""overflow: the initial weights, the forward pass or the weight gradients left the floating-point range.
Only the first place it happens is reported: everything after it is inf or NaN too."""

from __future__ import annotations

from initdiag.checks import Check, FindingCode
from initdiag.checks._shared import finding, finite


def overflow(run, spec=None, t=None, phase=None) -> list:
    for layer in run.layers:
        if layer.weight_mean is not None and not finite(layer.weight_mean, layer.weight_std):
            return [finding("error", "overflow", layer, f"{layer.name}: the initial weights are not finite",
                             "check the supplied array or custom init of this layer")]
        if not finite(layer.preact_var, layer.act_mean, layer.act_var):
            return [finding("error", "overflow", layer,
                             f"{layer.name}: activations overflowed to inf/NaN in the forward pass",
                             "the weights are far too large for this depth; use a fan-scaled scheme (xavier, relu, lecun_normal)")]
    for layer in reversed(run.layers):  # only what reaches a weight: an output's dLoss/dp may be inf harmlessly
        if layer.weight_grad_var is not None and not finite(layer.weight_grad_var):
            return [finding("error", "overflow", layer,
                             f"{layer.name}: the weight gradients overflowed to inf/NaN in the backward pass",
                             "huge activations or weights: use a fan-scaled scheme for this activation")]
    return []


CHECK = Check(
    order=92,
    run_order=10,  # first: the other checks read values an overflow makes meaningless
    codes=(FindingCode("overflow", ("error",), "Values overflow to inf or NaN",
                       "The forward or backward pass left the floating-point range; the weights are far too large.",
                       flag="overflow", panel="signal"),),  # the plots move a backward-pass overflow to the gradient panel
    find=overflow,
)
