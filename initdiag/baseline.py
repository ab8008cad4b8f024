"""Baselines: record each spec's per-layer figures and findings, and later report what moved.

`check --save-baseline FILE` writes `dumps(snapshot(reports))`; `check --baseline FILE` adds, to each
report, the findings of `compare(report, load(FILE), factor)` (through `Reference`, which report.judge
calls before it computes the verdict from every finding):

| code | severity | when |
|---|---|---|
| `regression` | warning | a layer's `act_var` or `grad_var` moved by more than `factor` (either way; default 2x), or went from finite to non-finite or back; a warning or error finding (code + layer) the baseline did not have; a finding whose severity rose to warning or error |
| `improvement` | info | a warning or error finding of the baseline went away, or its severity fell |
| `no-baseline` | info | a spec (or a layer of a known spec) the baseline has no figures for |
| `baseline-mismatch` | info | the run differs from the baseline's (seed, scheme, batch, dtype, or the seeds of a `--seeds` run), or a baseline layer is gone: figures may move for that reason alone |

Info findings (scheme-activation-mismatch, edge-of-chaos) are recorded but their appearing or going away
is neither a regression nor an improvement. Suppressed findings (an `ignore:` in the spec) are not
recorded and never count as new; a baseline finding that is now suppressed has not "gone away".

Comparing figures: both sides are rounded to 4 significant digits first (what the file holds), so a
report compared with its own snapshot gives ratio 1 exactly. Variances below FLOOR (1e-30, an RMS of
1e-15: far below what a float32 weight update can resolve) count as 0, and the ratio is taken as
max(a, FLOOR) / max(b, FLOOR): two figures at or near 0 never regress, while 0 -> 1e-12 does.
null and non-finite figures (inf, NaN: written as null) are alike; a change between finite and
non-finite is a regression, two non-finite figures are not.

The file (format version 1) is stable run after run with the same seed, so it diffs well in git:
sorted keys, indent 2, a trailing newline, figures rounded to 4 significant digits, -0.0 written as
0.0, specs keyed by their path (relative, forward slashes), layers by name, findings sorted, no
timestamp; `initdiag_version` changes only on upgrades:

    {"format": "initdiag-baseline", "format_version": 1, "initdiag_version": "0.1.0",
     "specs": {"specs/a.yaml": {"name", "seed", "scheme", "batch", "dtype", "verdict", ("seeds": --seeds runs only),
                                "findings": [{"code", "layer", "severity"}, ...],
                                "layers": {"dense_0": {"index", "kind", "act_var", "grad_var", ...}}}}}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePath
from typing import NamedTuple

from initdiag import __version__
from initdiag.numbers import compact

FACTOR = 2.0
FLOOR = 1e-30  # variances below this count as 0 (see the module docstring)
FORMAT = "initdiag-baseline"
FORMAT_VERSION = 1
DIGITS = 4  # significant digits kept in the file

COMPARED = {"act_var": "activation variance", "grad_var": "gradient variance"}
# recorded for the reader of a diff; only COMPARED figures can regress
FIGURES = ("act_var", "grad_var", "act_mean", "preact_var", "weight_grad_var", "dead_fraction", "saturation", "symmetry")
CONTEXT = ("seed", "scheme", "batch", "dtype")  # a difference here moves figures by itself
SEVERITIES = ("info", "warning", "error")
PROBLEMS = ("warning", "error")  # severities whose appearing / going away counts

REGRESSION, IMPROVEMENT, NO_BASELINE, MISMATCH = "regression", "improvement", "no-baseline", "baseline-mismatch"
RERECORD = "if the change is intended, record a new baseline with --save-baseline"


class BaselineError(Exception):
    """A baseline file that cannot be used; str() is the whole message, file name first."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# --- recording ---------------------------------------------------------------------------------

def spec_key(path, root=None) -> str:
    """How a spec is keyed: its path relative to `root` (default: the current folder), with forward
    slashes and no `./`: "specs/a.yaml" whether the run named it ./specs/a.yaml, specs\\a.yaml on
    Windows, or by its absolute path."""
    text = str(path).replace("\\", "/")
    if os.path.isabs(text):
        try:
            text = os.path.relpath(text, os.fspath(root) if root is not None else os.getcwd())
        except ValueError:  # another drive on Windows: keep it absolute
            pass
    return PurePath(os.path.normpath(text)).as_posix()


def figure(value):
    """A figure as the file holds it: 4 significant digits, null for missing or non-finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    value = float(f"{value:.{DIGITS - 1}e}")
    return 0.0 if value == 0 else value  # no -0.0


def _counted(findings) -> list[dict]:
    return [f for f in findings or () if not f.get("suppressed")]


def _finding_keys(findings) -> dict:
    """(code, layer) -> the most severe severity among the counted findings with that key."""
    keys = {}
    for finding in _counted(findings):
        key = (finding["code"], finding.get("layer"))
        if key not in keys or _rank(finding["severity"]) > _rank(keys[key]):
            keys[key] = finding["severity"]
    return keys


def _rank(severity) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def _layer_keys(layers) -> list[tuple[str, dict]]:
    """(key, layer) in run order; names are unique in a valid spec, a repeat gets `name@index`."""
    seen, out = set(), []
    for layer in layers or ():
        key = str(layer.get("name"))
        if key in seen:
            key = f"{key}@{layer.get('index')}"
        seen.add(key)
        out.append((key, layer))
    return out


def _spec_entry(report: dict) -> dict:
    findings = [{"code": code, "layer": layer, "severity": severity}
                for (code, layer), severity in _finding_keys(report.get("findings")).items()]
    findings.sort(key=lambda f: (f["code"], f["layer"] is not None, f["layer"] or ""))
    layers = {}
    for key, layer in _layer_keys(report.get("layers")):
        entry = {name: figure(layer.get(name)) for name in FIGURES}
        entry.update(index=layer.get("index"), kind=layer.get("kind"))
        layers[key] = entry
    entry = {"name": report.get("name"), "seed": report.get("seed"), "scheme": report.get("scheme"),
             "batch": report.get("batch"), "dtype": report.get("dtype"), "verdict": report.get("verdict"),
             "findings": findings, "layers": layers}
    if report.get("seeds"):  # a --seeds N run: its figures are means over these seeds
        entry["seeds"] = list(report["seeds"])
    return entry


def snapshot(reports: list[dict]) -> dict:
    """The baseline document of a run's check reports (report.build's dicts)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "initdiag_version": __version__,
            "specs": {spec_key(report["spec"]): _spec_entry(report) for report in reports}}


def dumps(baseline: dict) -> str:
    """Stable JSON text: sorted keys, indent 2, strict JSON, a trailing newline."""
    return json.dumps(baseline, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --- reading -----------------------------------------------------------------------------------

def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def load(path) -> dict:
    """Read and validate a baseline file; BaselineError with a message naming the file otherwise."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{shown}: no such baseline file (record one with --save-baseline)") from None
    except IsADirectoryError:
        raise BaselineError(f"{shown}: is a directory, not a baseline file") from None
    except UnicodeDecodeError:
        raise BaselineError(f"{shown}: not a baseline: the file is not UTF-8 text") from None
    except OSError as err:
        raise BaselineError(f"{shown}: cannot read the baseline: {err.strerror or err}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise BaselineError(f"{shown}:{err.lineno}:{err.colno}: not a baseline: invalid JSON ({err.msg})") from None
    except ValueError as err:
        raise BaselineError(f"{shown}: not a baseline: {err}") from None
    problem = validate(data)
    if problem:
        raise BaselineError(f"{shown}: {problem}")
    return data


def validate(data) -> str | None:
    """What is wrong with a baseline document, or None; what `compare` relies on is checked."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f'not an initdiag baseline (expected a JSON object with "format": "{FORMAT}")'
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        return (f"baseline format version {json.dumps(version)} is not supported: initdiag {__version__} reads "
                f"version {FORMAT_VERSION}; record the baseline again with --save-baseline")
    specs = data.get("specs")
    if not isinstance(specs, dict):
        return '"specs": expected an object keyed by spec path'
    for key, entry in specs.items():
        where = f"specs[{json.dumps(key)}]"
        if not isinstance(entry, dict):
            return f"{where}: expected an object"
        layers = entry.get("layers")
        if not isinstance(layers, dict):
            return f'{where}."layers": expected an object keyed by layer name'
        for name, layer in layers.items():
            if not isinstance(layer, dict):
                return f"{where}.layers[{json.dumps(name)}]: expected an object"
            for figure_name in COMPARED:
                value = layer.get(figure_name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    return f"{where}.layers[{json.dumps(name)}].{figure_name}: expected a number or null, not {json.dumps(value)}"
        findings = entry.get("findings", [])
        if not isinstance(findings, list):
            return f'{where}."findings": expected a list'
        for i, finding in enumerate(findings):
            if (not isinstance(finding, dict) or not isinstance(finding.get("code"), str)
                    or finding.get("severity") not in SEVERITIES
                    or not (finding.get("layer") is None or isinstance(finding.get("layer"), str))):
                return f"{where}.findings[{i}]: expected {{code, layer, severity}} with severity info, warning or error"
    return None


# --- comparing ---------------------------------------------------------------------------------

def _show(value) -> str:
    return "non-finite" if value is None else compact(value)


def _moved(name: str, label: str, old, new, factor: float) -> str | None:
    """The message if a figure moved beyond `factor`, else None (old, new already rounded or None)."""
    if old is None and new is None:
        return None
    if old is None:
        return f"{name}: {label} became finite again ({_show(new)}; non-finite in the baseline)"
    if new is None:
        return f"{name}: {label} became non-finite (inf or NaN; {_show(old)} in the baseline)"
    low, high = sorted((max(abs(old), FLOOR), max(abs(new), FLOOR)))
    ratio = high / low
    if not ratio > factor:
        return None
    if min(abs(old), abs(new)) < FLOOR:
        verb = "rose from" if abs(new) > abs(old) else "fell to"
        shown = f"{_show(old)} to {_show(new)}" if verb == "rose from" else f"{_show(new)} from {_show(old)}"
        return (f"{name}: {label} {verb} {shown} since the baseline (values below {compact(FLOOR)} count as 0, "
                f"more than {compact(factor)}x)")
    return f"{name}: {label} moved {compact(ratio)}x ({_show(old)} \u2192 {_show(new)}) since the baseline"


def _finding(severity, code, layer, message, hint, where) -> dict:
    file, line, column = where
    return {"severity": severity, "code": code, "layer": layer, "message": message, "hint": hint,
            "file": file, "line": line, "column": column}


def _locator(report: dict):
    """where(layer, own=None): (file, line, column) of `own`, else of the layer's first finding in the
    report, else the spec's start."""
    default = (report.get("spec"), 1, 1)
    first = {}
    for finding in report.get("findings") or ():
        layer = finding.get("layer")
        if layer is not None and layer not in first and finding.get("line") is not None:
            first[layer] = finding

    def at(finding):
        return (finding.get("file") or report.get("spec"), finding.get("line") or 1, finding.get("column") or 1)

    def where(layer, own=None):
        if own is not None and own.get("line") is not None:
            return at(own)
        return at(first[layer]) if layer in first else default

    return where


def _on(code, layer) -> str:
    return f"{code} on {layer}" if layer is not None else f"{code} (network-wide)"


def compare(report: dict, baseline: dict, factor: float = FACTOR) -> list[dict]:
    """Findings (shaped as the report's) for what moved since `baseline` (a document from snapshot or
    load); empty when nothing did. Most severe first, then in layer order."""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1):
        raise ValueError(f"the baseline factor must be a finite number >= 1, not {factor!r}")
    where = _locator(report)
    key = spec_key(report["spec"])
    entry = (baseline.get("specs") or {}).get(key)
    if entry is None:
        return [_finding("info", NO_BASELINE, None, f"new spec: no baseline yet for {key}",
                         "record one with --save-baseline to compare later runs against it", where(None))]
    out = []  # (order, finding)
    order = {}
    layers = _layer_keys(report.get("layers"))
    for index, (name, _) in enumerate(layers):
        order[name] = index

    changed = [f"{field} {json.dumps(entry.get(field))} \u2192 {json.dumps(report.get(field))}"
               for field in CONTEXT if field in entry and entry.get(field) != report.get(field)]
    recorded_seeds, run_seeds = entry.get("seeds") or [entry.get("seed")], report.get("seeds") or [report.get("seed")]
    if ("seeds" in entry or report.get("seeds")) and recorded_seeds != run_seeds:  # means over other seeds
        changed.append(f"seeds {json.dumps(recorded_seeds)} \u2192 {json.dumps(run_seeds)}")
    if changed:
        out.append(_finding("info", MISMATCH, None, f"this run differs from the baseline's: {', '.join(changed)}",
                            "figures move with these alone; compare runs made the same way, or record a new baseline",
                            where(None)))

    recorded = entry.get("layers") or {}
    for name, layer in layers:
        old = recorded.get(name)
        if old is None:
            out.append(_finding("info", NO_BASELINE, name, f"{name}: new layer, no baseline figures yet",
                                "record a new baseline with --save-baseline", where(name)))
            continue
        for figure_name, label in COMPARED.items():
            message = _moved(name, label, figure(old.get(figure_name)), figure(layer.get(figure_name)), factor)
            if message:
                out.append(_finding("warning", REGRESSION, name, message,
                                    f"a changed init, width, activation or layer order moves the figures; {RERECORD}",
                                    where(name)))
    present = {name for name, _ in layers}
    for name in sorted(set(recorded) - present, key=lambda n: (recorded[n].get("index") is None, recorded[n].get("index") or 0, n)):
        out.append(_finding("info", MISMATCH, None, f"layer {name} of the baseline is no longer in the spec",
                            f"its figures are not compared; {RERECORD}", where(None)))

    before = {(f["code"], f.get("layer")): f["severity"] for f in entry.get("findings") or ()}
    now = _finding_keys(report.get("findings"))
    firsts = {}
    for finding in _counted(report.get("findings")):
        firsts.setdefault((finding["code"], finding.get("layer")), finding)
    for (code, layer), severity in now.items():
        own = firsts[(code, layer)]
        old = before.get((code, layer))
        if severity not in PROBLEMS or (old is not None and _rank(old) >= _rank(severity)):
            continue
        detail = own.get("message") or ""
        if old is None:
            message = f"new finding {_on(code, layer)} ({severity})" + (f": {detail}" if detail else "")
        else:
            message = f"{_on(code, layer)} worsened from {old} to {severity} since the baseline" + (f": {detail}" if detail else "")
        out.append(_finding("warning", REGRESSION, layer, message, own.get("hint") or RERECORD, where(layer, own)))
    suppressed = {(f["code"], f.get("layer")) for f in report.get("findings") or () if f.get("suppressed")}
    for (code, layer), old in sorted(before.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        severity = now.get((code, layer))
        if old not in PROBLEMS or (code, layer) in suppressed or (severity is not None and _rank(severity) >= _rank(old)):
            continue
        if severity is None:
            message = f"finding {_on(code, layer)} ({old}) went away since the baseline"
        else:
            message = f"{_on(code, layer)} eased from {old} to {severity} since the baseline"
        out.append(_finding("info", IMPROVEMENT, layer, message, "record a new baseline with --save-baseline to keep it",
                            where(layer, firsts.get((code, layer)))))

    rank = {severity: -i for i, severity in enumerate(SEVERITIES)}
    return sorted(out, key=lambda f: (rank[f["severity"]], -1 if f["layer"] is None else order.get(f["layer"], len(order))))


class Reference(NamedTuple):
    """A loaded baseline and how far a figure may move (`check --baseline FILE --baseline-factor F`): what
    report.judge compares each report with before its verdict; with the `spec`, its `ignore:` lists
    suppress the comparison's findings too. Picklable, for --jobs."""

    document: dict
    factor: float = FACTOR
    spec: object = None  # spec.NetworkSpec

    def compare(self, report: dict) -> list[dict]:
        added = compare(report, self.document, self.factor)
        if self.spec is None:
            return added
        from initdiag import checks

        return checks.suppress_later(added, self.spec, _indices(report))

    @staticmethod
    def as_findings(added: list[dict], report: dict) -> list:
        """The comparison's findings as checks.Finding (layer indices from the report), for the verdict and fails."""
        from initdiag import checks

        indices = _indices(report)
        return [checks.Finding(f["severity"], f["code"], f["layer"], f["message"], f["hint"], indices.get(f["layer"]),
                               bool(f.get("suppressed")), f.get("reason")) for f in added]


def _indices(report: dict) -> dict:
    return {layer.get("name"): layer.get("index") for layer in report.get("layers") or ()}
