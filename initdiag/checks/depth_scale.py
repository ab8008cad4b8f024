"""depth-scale: whether the features the readout learns from still tell near inputs from far ones
(Schoenholz et al. 2017), or depend on the input at all. README: "Findings and thresholds"."""

from __future__ import annotations

import math

from initdiag.checks import Check, FindingCode, Threshold
from initdiag.checks._architecture import normalized
from initdiag.checks._shared import finding, forward_finite, gradient_energy
from initdiag.checks._shared import level as _level
from initdiag.numbers import compact


def input_contrast(run, spec, t, phase=None) -> list:
    """depth-scale: the features the readout sees keep less than contrast_error (e^-3: deeper than three depth
    scales ξ_c) of the input's near/far contrast, or contrast_warning (e^-2); or their input-dependent part
    has collapsed below collapse_error of their second moment."""
    contrast = run.contrast
    if contrast is None or not forward_finite(run):
        return []
    layer = run.layers[contrast.layer_index]
    before = run.layers[contrast.layer_index - 1]
    if contrast.signal_fraction < t.collapse_error:
        return [finding(
            "error", "depth-scale", before,
            f"the features {layer.name} reads (from {before.name}) barely depend on the input: the part that varies "
            f"across inputs is {compact(contrast.signal_fraction)} of their second moment, so every input looks alike "
            "(the ordered phase: the signal collapses onto one point)",
            "the biases or a contracting scale dominate the weights: use a fan-scaled scheme with zero bias_init, "
            "or fewer layers",
        )]
    level = _level(1 / contrast.contrast if contrast.contrast > 0 else math.inf, 1 / t.contrast_warning, 1 / t.contrast_error)
    if not level:
        return []
    depth = f"about {compact(-math.log(contrast.contrast))} depth scales ξ_c deep" if contrast.contrast > 0 else "far deeper than its depth scale ξ_c"
    # an estimate less precise than the threshold itself (a handful of pairs) cannot fail a network
    noisy = level == "error" and contrast.standard_error >= t.contrast_error
    healed = level == "error" and normalized(spec)
    return [finding(
        "warning" if noisy or healed else level, "depth-scale", before,
        f"the features {layer.name} reads (from {before.name}) keep {compact(max(contrast.contrast, 0.0))} of the input's "
        f"contrast between near and far inputs (±{compact(contrast.standard_error)} over {contrast.samples} pairs): "
        f"the network is {depth}; in a few hundred steps networks train up to about 3 ξ_c "
        "(Schoenholz et al. 2017: about 6 ξ_c with long training)"
        + (" — too few samples to be sure: use a larger batch or --seeds" if noisy else "")
        + ("; its layers feed normalizations, which make them scale-invariant: they train, more slowly"
           if healed and not noisy else ""),
        _edge_hint(run, spec),
    )]


def _edge_hint(run, spec) -> str:
    """Which way the edge of chaos lies: a gradient that grows towards the input marks the chaotic side."""
    weighted = [layer for layer in run.layers if layer.weight_grad_var is not None]
    energies = [gradient_energy(layer, spec.layers[layer.index]) for layer in (weighted[0], weighted[-1])] if weighted else []
    chaotic = len(energies) == 2 and energies[1] > 0 and energies[0] > energies[1]
    if chaotic:
        return ("the chaotic side (gradients grow towards the input): a smaller weight variance, e.g. init: xavier or "
                "a gain below 1, or fewer layers; residual connections with a small scale keep depth trainable")
    return ("the ordered side (gradients shrink towards the input): a larger weight variance (a gain above 1, or "
            "relu/He for ReLU-like units) or smaller biases (bias_init: 0), or fewer layers")


CONTRAST = "below this share of the input's near/far contrast left at the readout's features"

CHECK = Check(
    order=60,
    run_order=45,  # between the activations' drift and the gradients, as the findings have always been ordered
    codes=(
        FindingCode("depth-scale", ("warning", "error"), "The network is deeper than its depth scale",
                    "The features the readout learns from no longer tell near inputs from far ones (chaotic phase) or "
                    "barely depend on the input (ordered phase): move towards the edge of chaos or make it shallower.",
                    flag="depth", panel="signal"),
    ),
    thresholds=(
        Threshold("contrast_warning", 0.135, CONTRAST),  # e^-2: two depth scales
        Threshold("contrast_error", 0.05, CONTRAST),  # e^-3: three depth scales
        Threshold("collapse_error", 1e-5, "below this input-dependent share of the features' second moment"),
    ),
    find=input_contrast,
)
