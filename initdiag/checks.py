"""Checks turn statistics into findings; one pure function turns findings into a verdict.

Thresholds and their reasoning are documented in the README ("Findings and thresholds").
"""

from __future__ import annotations

import math
from typing import NamedTuple

from initdiag import activations, schemes
from initdiag.numbers import compact
from initdiag.stats import RunStats

SEVERITIES = ("info", "warning", "error")


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
    drift_warning: float = 10.0  # activation second moment vs the input's, either way
    drift_error: float = 1000.0
    gradient_warning: float = 100.0  # first/last weight-gradient RMS ratio, either way
    gradient_error: float = 10000.0
    saturation_warning: float = 0.10
    saturation_error: float = 0.50
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
        findings += _drift(run, thresholds)
    if not overflow:
        findings += _gradients(run, thresholds) + _through_time(run, thresholds)
    findings += _per_layer(run, thresholds)
    findings = _suppress(findings, spec)
    order = {severity: -i for i, severity in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.layer_index if f.layer_index is not None else -1))


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
    for layer in reversed(run.layers):
        if not _finite(layer.grad_var, layer.weight_grad_var if layer.weight_grad_var is not None else 0.0):
            return [_finding("error", "overflow", layer,
                             f"{layer.name}: gradients overflowed to inf/NaN in the backward pass",
                             "saturated outputs or huge weights; use a fan-scaled scheme for this activation")]
    return []


def signal_second_moment(layer) -> float:
    """The scale a layer passes on: its output's second moment, or its logits' for softmax,
    whose probabilities always have second moment about 1/width whatever the logits do."""
    return layer.preact_second_moment if layer.activation.startswith("softmax") else layer.act_second_moment


def _level(ratio: float, warning: float, error: float) -> str | None:
    magnitude = max(ratio, 1 / ratio) if ratio > 0 else math.inf
    return "error" if magnitude > error else "warning" if magnitude > warning else None


def _drift(run: RunStats, t: Thresholds) -> list[Finding]:
    reference = run.input_second_moment
    if not reference > 0:
        return []
    findings = []
    for code, grows in (("exploding-activations", True), ("vanishing-activations", False)):
        ratios = [(layer, signal_second_moment(layer) / reference) for layer in run.layers]
        ratios = [(layer, r) for layer, r in ratios if (r > 1) == grows and r != 1]
        levels = [(layer, r, _level(r, t.drift_warning, t.drift_error)) for layer, r in ratios]
        levels = [item for item in levels if item[2]]
        if not levels:
            continue
        severity = "error" if any(level == "error" for *_, level in levels) else "warning"
        first, ratio, _ = next(item for item in levels if item[2] == severity)
        worst_layer, worst = max(ratios, key=lambda item: abs(math.log(item[1])) if item[1] > 0 else math.inf)
        direction = "grows" if grows else "shrinks"
        hint = (
            "weights are too large: use a fan-scaled scheme (relu/He for ReLU-like, xavier for tanh/sigmoid, lecun_normal for SELU)"
            if grows else
            "weights are too small for this depth: use a fan-scaled scheme (relu/He for ReLU-like, xavier for tanh/sigmoid, lecun_normal for SELU)"
        )
        findings.append(_finding(
            severity, code, first,
            f"activation second moment {direction} to {_relative(ratio)} at {first.name}"
            + (f" ({_relative(worst)} at {worst_layer.name})" if worst_layer is not first else ""),
            hint,
        ))
    return findings


def _relative(ratio: float) -> str:
    if ratio == 0:
        return "0 (no signal left)"
    return f"{compact(ratio)}x the input's" if ratio >= 1 else f"1/{compact(1 / ratio)} of the input's"


def _ratio(ratio: float) -> str:
    """7.5e4x, 1/1.33e3 of, 0x (no signal left): a factor relative to what follows it."""
    return f"{compact(ratio)}x" if ratio >= 1 else f"1/{compact(1 / ratio)} of" if ratio > 0 else "0x (no signal left)"


def _gradients(run: RunStats, t: Thresholds) -> list[Finding]:
    weighted = [layer for layer in run.layers if layer.weight_grad_var is not None]
    if len(weighted) < 2:
        return []
    first, last = weighted[0], weighted[-1]
    if first.weight_grad_var == 0 and last.weight_grad_var == 0:
        return [_finding("error", "vanishing-gradients", first, "no gradient reaches any weight (all weight gradients are 0)",
                         "break the symmetry: zero or constant weights pass no gradient; use a random scheme")]
    # RMS, not variance: under He, var(dW_l) carries the width ratio n_last/n_first even when healthy.
    ratio = math.sqrt(first.weight_grad_var / last.weight_grad_var) if last.weight_grad_var else math.inf
    level = _level(ratio, t.gradient_warning, t.gradient_error)
    if not level:
        return []
    grows = ratio > 1
    return [_finding(
        level, "exploding-gradients" if grows else "vanishing-gradients", first,
        f"weight-gradient RMS at {first.name} is {_ratio(ratio)} that at {last.name}",
        "gradients grow towards the input: weights too large for this depth" if grows else
        "gradients shrink towards the input: weights too small, or saturated/dead units block them",
    )]


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


def _through_time(run: RunStats, t: Thresholds) -> list[Finding]:
    """Recurrent layers: the RMS of dLoss/dh at the first time step over the last's, with the
    gradient-ratio thresholds (backpropagation through time is depth along the sequence)."""
    findings = []
    for layer in run.layers:
        first, last = layer.grad_var_first_step, layer.grad_var_last_step
        if first is None or last is None or not last > 0:
            continue
        ratio = math.sqrt(first / last)
        level = _level(ratio, t.gradient_warning, t.gradient_error)
        if level:
            grows = ratio > 1
            findings.append(_finding(
                level, "exploding-gradients" if grows else "vanishing-gradients", layer,
                f"{layer.name}: through time, the RMS of dLoss/dh at the first step is {_ratio(ratio)} that at the last",
                "recurrent weights too large: an orthogonal recurrent_init keeps the scale" if grows else
                "the gradient fades along the sequence: orthogonal recurrent_init, and for an LSTM forget_bias: 1",
            ))
    return findings


def _per_layer(run: RunStats, t: Thresholds) -> list[Finding]:
    findings = []
    for layer in run.layers:
        level = "error" if layer.saturation > t.saturation_error else "warning" if layer.saturation > t.saturation_warning else None
        if level:
            findings.append(_finding(level, "saturation", layer,
                                     f"{layer.name}: {_percent(layer.saturation)} of outputs are saturated ({layer.activation})",
                                     "saturated units pass almost no gradient: use smaller weights (xavier for tanh/sigmoid)"))
        level = "error" if layer.dead_fraction > t.dead_error else "warning" if layer.dead_fraction > t.dead_warning else None
        if level and not layer.activation.startswith("softmax"):  # zero probabilities are saturation's story
            findings.append(_finding(level, "dead-units", layer,
                                     f"{layer.name}: {_percent(layer.dead_fraction)} of units output 0 for every sample",
                                     "dead units never learn: check the weight scale and bias (a small positive bias_init such as 0.01 helps ReLU)"))
        if layer.weight_mean is not None and layer.units > 1 and layer.symmetry > t.symmetry_error:
            findings.append(_finding("error", "symmetry", layer,
                                     f"{layer.name}: {_percent(layer.symmetry)} of units duplicate another unit (identical weights and bias)",
                                     "identical units get identical gradients and never differ: use a random scheme"))
    return findings


def _mismatches(spec) -> list[Finding]:
    """One info finding per (init, activation) pair the rules of thumb advise against, naming its layers."""
    groups: dict = {}
    for layer in spec.layers:
        init = layer.init
        if init is None or init.scheme in ("supplied", "custom") or layer.kind == "embedding":
            continue  # embeddings are a lookup, outside the rules-of-thumb table (torch's default is N(0, 1))
        activation = activations.ACTIVATIONS[layer.activation.name]
        if not any(schemes.same_variance_rule(init.scheme, good) for good in activation.recommended):
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
