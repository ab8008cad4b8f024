"""edge-of-chaos: the mean-field phase of the hidden layers, from theory.phase() (info)."""

from __future__ import annotations

from initdiag.checks import Check, Finding, FindingCode
from initdiag.numbers import compact


def edge_of_chaos(run, spec, t=None, phase=None) -> list:
    """Info: the mean-field phase of the hidden layers (Schoenholz et al. 2017)."""
    if phase is None:
        return []
    chi = compact(phase.chi)
    if phase.phase == "critical":
        message = f"critical: mean chi = {chi} ≈ 1, gradients keep their scale through depth (the edge of chaos)"
        hint = "this is where deep networks train best; nothing to change"
    elif phase.chi == 0:
        message = "ordered phase: mean chi = 0, no gradient passes back through the hidden layers"
        hint = "zero weights pass no gradient: use a random scheme"
    elif phase.phase == "ordered":
        message = (f"ordered phase: mean chi = {chi} < 1, gradients shrink by e every "
                   f"{compact(phase.depth_scale)} layers at infinite width")
        hint = "a larger weight variance (e.g. a gain, or He for ReLU-like units) moves it towards chi = 1"
    else:
        message = (f"chaotic phase: mean chi = {chi} > 1, gradients grow by e every "
                   f"{compact(phase.depth_scale)} layers at infinite width")
        hint = "a smaller weight variance (e.g. xavier or lecun_normal, or a gain < 1) moves it towards chi = 1"
    return [Finding("info", "edge-of-chaos", None, message, hint)]


CHECK = Check(
    order=96,
    run_order=30,
    codes=(FindingCode("edge-of-chaos", ("info",), "Mean-field phase of the network (ordered or chaotic)",
                       "Far from the edge of chaos (mean chi = 1) signals vanish (ordered) or decorrelate (chaotic) with depth.",
                       flag="edge-of-chaos", panel=None),),
    find=edge_of_chaos,
)
