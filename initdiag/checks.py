"""Checks turn statistics into findings; one pure function turns findings into a verdict.

Thresholds and their reasoning are documented in the README ("Findings and thresholds").
"""

from __future__ import annotations

import math
from typing import NamedTuple

from initdiag import activations, checks_gradients, checks_signal, schemes
from initdiag.numbers import compact
from initdiag.stats import RunStats

SEVERITIES = ("info", "warning", "error")
FUSED_LOSSES = ("cross_entropy", "binary_cross_entropy")


class Finding(NamedTuple):
    severity: str  # info | warning | error
    code: str
    layer: str | None
    message: str
    hint: str
    layer_index: int | None = None
    suppressed: bool = False  # by an `ignore:` of its layer or of the spec: shown, never counted
    reason: str | None = None  # the ignore's reason, when it gave one

    def as_dict(self) -> dict:
        data = {"severity": self.severity, "code": self.code, "layer": self.layer, "message": self.message, "hint": self.hint}
        if self.suppressed:
            data.update(suppressed=True, reason=self.reason)
        return data


class Thresholds(NamedTuple):
    drift_warning: float = 10.0  # activation second moment vs its segment's reference, either way
    drift_error: float = 1e8  # 1e4 in RMS: beyond the ~4 decades of learning rate that SGD is used with
    stream_warning: float = 10.0  # a residual stream's multiplicative growth over its blocks
    stream_error: float = 10000.0
    gradient_warning: float = 100.0  # first-layer vs readout RMS of the per-sample gradient energy, either way
    gradient_error: float = 10000.0
    relative_gradient_warning: float = 1e-3  # the body's largest |dW|/|W|: its fraction moved per step at lr 1
    relative_gradient_error: float = 1e-4
    contrast_warning: float = 0.135  # e^-2: the input's near/far contrast left at the features (two depth scales)
    contrast_error: float = 0.05  # e^-3: three depth scales
    collapse_error: float = 1e-5  # the features' input-dependent share of their second moment
    saturation_warning: float = 0.10
    saturation_error: float = 0.99
    dead_warning: float = 0.10
    dead_error: float = 0.50
    symmetry_error: float = 0.0  # any duplicated unit

    def override(self, assignments: dict) -> "Thresholds":
        """Thresholds with `name=value` overrides; unknown names raise KeyError with the valid ones."""
        known = set(self._fields)
        changes = {}
        for name, value in assignments.items():
            key = name.replace("-", "_")
            if key not in known:
                raise KeyError(name)
            changes[key] = float(value)
        return self._replace(**changes)


def verdict(findings) -> str:
    severities = {finding.severity for finding in findings if not finding.suppressed}
    return "failing" if "error" in severities else "warning" if "warning" in severities else "healthy"


def fails(findings, fail_on: str) -> bool:
    """Whether any finding reaches `fail_on` (info | warning | error | never)."""
    if fail_on == "never":
        return False
    floor = SEVERITIES.index(fail_on)
    return any(SEVERITIES.index(finding.severity) >= floor for finding in findings if not finding.suppressed)


def find(run: RunStats, spec, thresholds: Thresholds = Thresholds(), phase=None) -> list[Finding]:
    """Every finding of one run, most severe first, then by layer; `phase` is theory.phase()'s verdict."""
    overflow = _overflow(run)
    findings = overflow + _mismatches(spec) + _edge_of_chaos(phase)
    forward_finite = all(_finite(layer.preact_var, layer.act_mean, layer.act_var) for layer in run.layers)
    if forward_finite:  # an overflow in the backward pass only: the activations still tell their drift
        findings += checks_signal.drift(run, spec, thresholds, _finding, _scale_hint)
        findings += checks_gradients.input_contrast(run, spec, thresholds, _finding)
    findings += checks_gradients.across_depth(run, spec, thresholds, _finding)
    findings += checks_gradients.body_learning(run, spec, thresholds, _finding)
    findings += checks_gradients.through_time(run, spec, thresholds, _finding)
    findings += _per_layer(run, spec, thresholds)
    findings = _suppress(findings, spec)
    order = {severity: -i for i, severity in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.layer_index if f.layer_index is not None else -1))


def _better_scheme(layer_spec) -> str | None:
    """The rules-of-thumb scheme for the layer's activation when its own scheme is not one of them, else None:
    a hint never recommends what the layer already has."""
    init, activation = layer_spec.init, activations.ACTIVATIONS.get(layer_spec.activation.name)
    recommended = activation.recommended if activation is not None else ()
    if init is None or not recommended or any(schemes.same_variance_rule(init.scheme, good) for good in recommended):
        return None
    return recommended[0]


def _scale_hint(layer_spec, grows: bool) -> str:
    """What to change, in the spec's terms: the scheme when it is not the one for the activation, else the depth."""
    better = _better_scheme(layer_spec)
    if better:
        return (f"{layer_spec.name} uses {layer_spec.init.display} with {layer_spec.activation.name}: "
                f"init: {better} keeps the scale ({'too large' if grows else 'too small'} now)")
    return ("the schemes already match their activations: the scale drifts with depth; "
            "add normalization (batchnorm/layernorm) or residual connections, or a gain that keeps it (recommend --calibrate)")


def _suppress(findings: list[Finding], spec) -> list[Finding]:
    """Mark the findings an `ignore:` covers (the layer's own, or the spec's for every layer), and add an
    `unused-ignore` warning for each ignored code that matched nothing, as ruff and mypy do."""
    layer_ignores = {layer.index: layer.ignore for layer in spec.layers if getattr(layer, "ignore", None)}
    spec_ignore = getattr(spec, "ignore", None)
    used: set = set()
    marked = []
    for finding in findings:
        for owner, ignore in ((finding.layer_index, layer_ignores.get(finding.layer_index)), (None, spec_ignore)):
            if ignore is not None and finding.code in ignore.codes:
                finding = finding._replace(suppressed=True, reason=ignore.reason)
                used.add((owner, finding.code))
                break
        marked.append(finding)
    for owner, ignore in [(None, spec_ignore)] + list(layer_ignores.items()):
        for code in (ignore.codes if ignore else ()):
            if (owner, code) not in used:
                layer = spec.layers[owner] if owner is not None else None
                where = layer.name if layer is not None else "the spec"
                marked.append(Finding("warning", "unused-ignore", layer.name if layer else None,
                                      f"{where}: ignore: {code} suppresses nothing", "remove it from the ignore list",
                                      owner))
    return marked


def _finding(severity, code, layer, message, hint) -> Finding:
    return Finding(severity, code, layer.name if layer else None, message, hint, layer.index if layer else None)


def _finite(*values) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)


def _overflow(run: RunStats) -> list[Finding]:
    for layer in run.layers:
        if layer.weight_mean is not None and not _finite(layer.weight_mean, layer.weight_std):
            return [_finding("error", "overflow", layer, f"{layer.name}: the initial weights are not finite",
                             "check the supplied array or custom init of this layer")]
        if not _finite(layer.preact_var, layer.act_mean, layer.act_var):
            return [_finding("error", "overflow", layer,
                             f"{layer.name}: activations overflowed to inf/NaN in the forward pass",
                             "the weights are far too large for this depth; use a fan-scaled scheme (xavier, relu, lecun_normal)")]
    for layer in reversed(run.layers):  # only what reaches a weight: an output's dLoss/dp may be inf harmlessly
        if layer.weight_grad_var is not None and not _finite(layer.weight_grad_var):
            return [_finding("error", "overflow", layer,
                             f"{layer.name}: the weight gradients overflowed to inf/NaN in the backward pass",
                             "huge activations or weights: use a fan-scaled scheme for this activation")]
    return []


signal_second_moment = checks_signal.signal_second_moment  # plots and recommend read the same scale


def _edge_of_chaos(phase) -> list[Finding]:
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


def _percent(fraction: float) -> str:
    return f"{fraction:.0%}" if round(fraction * 100, 1).is_integer() else f"{fraction:.1%}"


def _per_layer(run: RunStats, spec, t: Thresholds) -> list[Finding]:
    findings = []
    for layer, layer_spec in zip(run.layers, spec.layers):
        level = "error" if layer.saturation > t.saturation_error else "warning" if layer.saturation > t.saturation_warning else None
        fused_output = layer.index == len(run.layers) - 1 and run.loss in FUSED_LOSSES
        if level == "error" and fused_output:
            level = "warning"  # a fused loss's gradient, p - y, does not vanish when the output saturates
        if level:
            attention = layer.kind in ("attention", "transformer")
            what = ("attention rows are saturated (largest weight > 0.99)" if attention else
                    f"samples get a near-certain prediction ({layer.activation}): the logits are large" if fused_output else
                    f"outputs are saturated ({layer.activation})")
            hint = ("the attention logits are too large: smaller query/key weights (xavier, or a 1/sqrt(dim) scale)" if attention else
                    "the loss's gradient still flows (p - y), but the first steps go to undoing the confidence: a smaller "
                    "init for this layer (xavier, or zero as for many heads), or a smaller signal below it" if fused_output else
                    _saturation_hint(layer_spec))
            findings.append(_finding(level, "saturation", layer, f"{layer.name}: {_percent(layer.saturation)} of {what}", hint))
        findings += _dead(run, layer, layer_spec, t)
        if layer.weight_mean is not None and layer.units > 1 and layer.symmetry > t.symmetry_error:
            findings.append(_finding("error", "symmetry", layer,
                                     f"{layer.name}: {_percent(layer.symmetry)} of units duplicate another unit (identical weights and bias)",
                                     "identical units get identical gradients and never differ: use a random scheme"))
    return findings


def _saturation_hint(layer_spec) -> str:
    better = _better_scheme(layer_spec)
    if better:
        return f"saturated units pass almost no gradient: init: {better} for {layer_spec.activation.name} (now {layer_spec.init.display})"
    return ("saturated units pass almost no gradient; the scheme already matches the activation, so the layer's input "
            "is large: normalize it (layernorm/batchnorm before the layer) or lower the gain")


def _dead(run: RunStats, layer, layer_spec, t: Thresholds) -> list[Finding]:
    """Dead units where they die: not again at a weightless or normalization layer after them (a dead
    channel stays 0 through batchnorm, pooling and flatten), and not for softmax (saturation's story)."""
    level = "error" if layer.dead_fraction > t.dead_error else "warning" if layer.dead_fraction > t.dead_warning else None
    if not level or layer.activation.startswith("softmax") or layer.kind in checks_signal.WEIGHTLESS_PASS_KINDS:
        return []
    previous = run.layers[layer.index - 1] if layer.index > 0 else None
    if (layer.kind in checks_signal.NORMALIZING_KINDS and previous is not None
            and previous.dead_fraction >= layer.dead_fraction):
        return []
    samples = f" of {run.probe_samples} inputs" if run.probe_samples else ""
    return [_finding(level, "dead-units", layer,
                     f"{layer.name}: {_percent(layer.dead_fraction)} of units output 0 for every one{samples}",
                     "dead units never learn: " + ("a small positive bias_init such as 0.01 helps ReLU, or a scheme "
                                                   "with zero biases" if layer_spec.init is None or layer_spec.init.scheme != "torch_default"
                                                   else "torch_default's biases outweigh the shrinking signal: use relu (He) with zero biases"))]


def _mismatches(spec) -> list[Finding]:
    """One info finding per (init, activation) pair the rules of thumb advise against, naming its layers."""
    groups: dict = {}
    for layer in spec.layers:
        init = layer.init
        if init is None or init.scheme in ("supplied", "custom") or layer.kind == "embedding":
            continue  # embeddings are a lookup, outside the rules-of-thumb table (torch's default is N(0, 1))
        if init.params.get("gain", 1.0) != 1.0:
            continue  # a chosen gain is a calibration (recommend --calibrate writes them), not a rule of thumb missed
        if _better_scheme(layer):
            groups.setdefault((init.display, layer.activation.name), []).append(layer)
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
