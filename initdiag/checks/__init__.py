"""Checks turn statistics into findings; one pure function turns findings into a verdict.

The CHECKS registry is built from this package's modules: each public module declares `CHECK`, one rule
with its finding code(s), the severities each can have, its thresholds (name, default, documentation),
its help, text flag and plot panel, and its `find`. Adding a check is adding a module; the suppressible
codes, the SARIF rules, the text flags, the plot panels, the schema's threshold docs and the `Thresholds`
type are all derived from CHECKS. README: "Findings and thresholds".
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import namedtuple
from dataclasses import dataclass
from typing import Callable, NamedTuple

SEVERITIES = ("info", "warning", "error")
PANELS = ("signal", "gradient", "units")  # the plot panels a finding can be marked on (reporters.plots)
STAGES = ("run", "suppression", "baseline")  # where a code is produced: by `find`, by `ignore:` handling, by a baseline


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


@dataclass(frozen=True)
class Threshold:
    """One field of Thresholds: `name` is `<what>_<severity>` (drift_warning), `doc` completes
    "<severity> ..." in the schema ("above this factor of ...")."""

    name: str
    default: float
    doc: str


@dataclass(frozen=True)
class FindingCode:
    """A finding code as users meet it: in `ignore:`, the text report, SARIF, the plots and the README."""

    code: str
    severities: tuple  # the severities findings of this code can have
    short: str  # SARIF shortDescription: one line
    help: str  # SARIF help: what it means and what to do
    flag: str  # the text report's label beside the layer
    panel: str | None  # the plot panel it is marked on (PANELS), or None: not marked


@dataclass(frozen=True)
class Check:
    """One rule: the codes it produces, its thresholds, and `find(run, spec, thresholds, phase) -> [Finding]`
    (None for codes produced outside the run: `stage` says where). `order` places it in listings (the
    Thresholds fields, so the reports' `thresholds`; SARIF's rules) and in the run; a new check takes a
    number not yet used. `run_order`, when given, places it in the run instead: findings of one severity
    on one layer keep the order they were found in."""

    codes: tuple  # FindingCode, ...
    order: int
    thresholds: tuple = ()  # Threshold, ...
    find: Callable | None = None
    stage: str = "run"
    run_order: int | None = None


def _discover() -> tuple:
    """Every public module of this package declares CHECK (a module without it is an error, not skipped)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append((module.CHECK.order, info.name, module.CHECK))
    return tuple(check for *_, check in sorted(found, key=lambda item: item[:2]))


RULES = _discover()
CHECKS = {entry.code: entry for rule in RULES for entry in rule.codes}  # finding code -> FindingCode
STAGE = {entry.code: rule.stage for rule in RULES for entry in rule.codes}  # finding code -> where it is produced
THRESHOLDS = tuple(threshold for rule in RULES for threshold in rule.thresholds)


class Thresholds(namedtuple("Thresholds", [t.name for t in THRESHOLDS], defaults=[t.default for t in THRESHOLDS])):
    """Every declared threshold by name, with its default (the checks' `thresholds`)."""

    __slots__ = ()

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


def find(run, spec, thresholds: Thresholds = Thresholds(), phase=None) -> list[Finding]:
    """Every finding of one run, most severe first, then by layer; `phase` is theory.phase()'s verdict.
    (The names in the spec's `thresholds:` and `ignore:` are checked before the run, by pipeline.diagnose.)"""
    findings = []
    for rule in sorted(RULES, key=lambda rule: rule.order if rule.run_order is None else rule.run_order):
        if rule.find is not None:
            findings += rule.find(run, spec, thresholds, phase)
    findings = suppress(findings, spec)
    order = {severity: -i for i, severity in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.layer_index if f.layer_index is not None else -1))


from initdiag.checks._suppression import suppress, suppress_later  # noqa: E402
from initdiag.checks._names import completed, spec_problems, spec_thresholds  # noqa: E402
