"""The report of one check: plain data assembled from the spec, the run and the findings."""

from __future__ import annotations

from initdiag import __version__
from initdiag.checks import Thresholds, verdict


def _parameter_fans(layer_spec) -> dict | None:
    """Every weight matrix's (fan_in, fan_out), as torch computes them, for layers with several."""
    from initdiag.layers import LAYERS

    kind = LAYERS[layer_spec.kind]
    weights = kind.weights(layer_spec.input_shape, layer_spec.config) if kind.params_dict else {}
    if len(weights) < 2:
        return None
    return {name: [int(fan) for fan in weight.fans] for name, weight in weights.items()}


def _located(finding, spec) -> dict:
    """A finding as data, with the spec line and column of the layer it is about (the file's start
    for network-wide findings), so CI formats can annotate the spec where the problem is."""
    data = finding.as_dict()
    layer = spec.layers[finding.layer_index] if finding.layer_index is not None else None
    location = layer.location if layer is not None else None
    data["file"] = spec.file
    data["line"], data["column"] = (location.line, location.column) if location else (1, 1)
    return data


def build(spec, run, findings, scheme: str | None = None, thresholds=None, theory=None, baseline=None) -> dict:
    """The JSON-shaped report (documented in the README; keys may be added, never renamed).

    `theory`, one theory.LayerTheory per layer, adds preact_var_theory and chi to every layer; `baseline`
    (baseline.Reference) adds the comparison's findings before the verdict."""
    data = assemble(spec, run, findings, scheme, thresholds, theory)
    judge(data, findings, baseline)
    return data


def judge(data: dict, findings, baseline=None) -> list:
    """The report's last step and the only place its verdict is set: the baseline's comparison of the assembled
    figures adds its findings (regression, improvement, ...) to the checks', then checks.verdict of them all.
    Returns every finding (checks.Finding), for checks.fails."""
    findings = list(findings)
    if baseline is not None:
        added = baseline.compare(data)
        data["findings"] = list(data.get("findings") or ()) + added
        findings += baseline.as_findings(added, data)
    data["verdict"] = verdict(findings)
    return findings


def assemble(spec, run, findings, scheme: str | None = None, thresholds=None, theory=None) -> dict:
    """The report without its verdict (None, set by judge): the spec, the statistics and the located findings."""
    layers = [layer.as_dict() for layer in run.layers]
    for layer, layer_spec in zip(layers, spec.layers):
        layer["parameter_fans"] = _parameter_fans(layer_spec)
    for layer, predicted in zip(layers, theory or [None] * len(layers)):
        layer["preact_var_theory"] = predicted.preact_var_theory if predicted else None
        layer["chi"] = predicted.chi if predicted else None
    return {
        "initdiag_version": __version__,
        "spec": spec.file,
        "name": spec.name,
        "scheme": scheme,
        "seed": spec.seed,
        "batch": spec.batch,
        "dtype": spec.dtype,
        "loss": run.loss,
        "input_distribution": spec.input_distribution,
        "input_mean": run.input_mean,
        "input_var": run.input_var,
        "thresholds": (thresholds or Thresholds())._asdict(),
        "input_contrast": run.contrast.as_dict() if run.contrast is not None else None,
        "dead_unit_inputs": run.probe_samples or None,
        "verdict": None,  # judge() sets it, once, from every finding
        "findings": [_located(finding, spec) for finding in findings],
        "layers": layers,
    }
