"""symmetry: units that duplicate another unit (identical weights and bias) never differ.
README: "Findings and thresholds"."""

from __future__ import annotations

from initdiag.checks import Check, FindingCode, Threshold
from initdiag.checks._shared import finding, percent


def symmetry(run, spec, t, phase=None) -> list:
    return [finding("error", "symmetry", layer,
                    f"{layer.name}: {percent(layer.symmetry)} of units duplicate another unit (identical weights and bias)",
                    "identical units get identical gradients and never differ: use a random scheme")
            for layer in run.layers[:-1]  # the output's units differ by the loss's gradient (p_k - y_k), not by weights
            if layer.weight_mean is not None and layer.units > 1 and layer.symmetry > t.symmetry_error]


CHECK = Check(
    order=90,
    codes=(FindingCode("symmetry", ("error",), "Units duplicate one another",
                       "Identical units get identical gradients and never differ; zero or constant weights cause it: use a random scheme.",
                       flag="sym", panel="units"),),
    thresholds=(Threshold("symmetry_error", 0.0, "above this fraction of a layer's units duplicated"),),  # any duplicate
    find=symmetry,
)
