"""dead-units: units that output 0 for every input of the batch, judged where they die.
README: "Findings and thresholds"."""

from __future__ import annotations

from initdiag.checks import Check, FindingCode, Threshold
from initdiag.checks._architecture import NORMALIZING_KINDS, RESCALING_KINDS, WEIGHTLESS_PASS_KINDS, branch_layers
from initdiag.checks._shared import finding, percent


def dead_units(run, spec, t, phase=None) -> list:
    findings, gating = [], branch_layers(spec, gates_only=True)
    for layer, layer_spec in zip(run.layers, spec.layers):
        found = _dead(run, layer, layer_spec, t)
        if layer.index in gating:
            # on a gate's path (a squeeze-excitation's reduce layer) dead units narrow the gate, which still scales
            # the signal that carries the gradient: a warning at most (RegNetY's SE layers, 20-60% dead, train)
            found = [f._replace(severity="warning", message=f.message + " (on a gate's path: they narrow the gate, which still scales the signal)")
                     for f in found]
        findings += found
    return findings


def _dead(run, layer, layer_spec, t) -> list:
    """Dead units where they die: not again at a weightless or normalization layer after them (a dead
    channel stays 0 through batchnorm, pooling, flatten and a layer scale), and not for softmax (saturation's
    story); a standalone activation layer (relu after a batchnorm) is where they die."""
    level = "error" if layer.dead_fraction > t.dead_error else "warning" if layer.dead_fraction > t.dead_warning else None
    if not level or layer.activation.startswith("softmax") or layer.kind in WEIGHTLESS_PASS_KINDS:
        return []
    if layer.activation == "identity":
        # a unit dies where its activation's slope is 0; with the identity a 0 is a zero scale (a zero-initialised
        # head, a batchnorm whose gamma starts at 0 as timm's zero_init_last, Goyal et al. 2017), whose own
        # gradient is not 0: it learns (a zero hidden layer's trouble is symmetry's story)
        return []
    previous = run.layers[layer.index - 1] if layer.index > 0 else None
    if (layer.kind in NORMALIZING_KINDS + RESCALING_KINDS and previous is not None
            and previous.dead_fraction >= layer.dead_fraction):
        return []
    samples = f" of {run.probe_samples} inputs" if run.probe_samples else ""
    return [finding(level, "dead-units", layer,
                    f"{layer.name}: {percent(layer.dead_fraction)} of units output 0 for every one{samples}",
                    "dead units never learn: " + ("a small positive bias_init such as 0.01 helps ReLU, or a scheme "
                                                  "with zero biases" if layer_spec.init is None or layer_spec.init.scheme != "torch_default"
                                                  else "torch_default's biases outweigh the shrinking signal: use relu (He) with zero biases"))]


DEAD = "above this fraction of a layer's units dead"

CHECK = Check(
    order=80,
    codes=(FindingCode("dead-units", ("warning", "error"), "Units output zero for every sample",
                       "Dead ReLU units never learn; check the weight scale and bias (a small positive bias_init helps).",
                       flag="dead", panel="units"),),
    thresholds=(Threshold("dead_warning", 0.10, DEAD),
                Threshold("dead_error", 0.50, DEAD)),
    find=dead_units,
)
