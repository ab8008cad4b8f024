"""Multi-seed confidence (`check --seeds N`): one check per seed, combined into one report of the same shape.

A single draw of weights and batch can mislead, most at small batches (8-32): a dead unit or a drift past a
threshold may be luck. `diagnose` runs `pipeline.diagnose` for the seeds s0, s0+1, ..., s0+N-1 (s0: the spec's
seed, after --seed) and `combine` merges the reports:

- every figure (a float: variances, means, fractions, weight statistics, the theory's prediction; in each layer
  and the report's input_mean / input_var) becomes its mean over the seeds, with `spread` (the sample standard
  deviation over the seeds, n - 1 in the denominator) and `per_seed` (each seed's value, in seed order) beside
  it, keyed by the figure's name; a figure that is null or non-finite in some seed has no mean: the figure and
  its spread are null (written as null in JSON), its per-seed values are kept;
- a finding, identified by its code and layer (the k-th of that code and layer, for the rare repeats; a drift
  finding, exploding- or vanishing-activations, by its code alone: it sits where the signal first crosses a
  threshold, which moves between seeds), is kept
  only when every seed has it, at the least severe severity it had; its message and hint are those of the median
  seed among the seeds at that severity (median by the first number that differs between their messages, the
  measured value the message states, else the middle one in seed order), and `per_seed` lists each seed's
  severity and message;
- a finding some seeds have and others lack goes to `unstable_findings`, at the most severe severity it reached,
  with `seeds` (where it appeared) and `per_seed`; it never counts towards the verdict or the exit code.

The verdict is checks.verdict of the kept findings. The combined report has every key of a single report, so
reporters, CI formats and baselines read it unchanged, plus `seeds`, `spread`, `per_seed` and
`unstable_findings`. With N = 1 `diagnose` is exactly pipeline.diagnose. Computation only: nothing prints.
"""

from __future__ import annotations

import math
import re

from initdiag import checks, pipeline, report

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def seed_list(first: int, count: int) -> list[int]:
    """The seeds of a run of `count` seeds from `first`: first, first + 1, ..."""
    return [first + offset for offset in range(count)]


def diagnose(spec, seeds: int = 1, thresholds=None, scheme: str | None = None, max_memory=None, draws=None,
             histogram_bins: int = 0, baseline=None) -> pipeline.Diagnosis:
    """pipeline.diagnose for `seeds` seeds from the spec's own, combined; `run` is the first seed's statistics.

    seeds == 1 is pipeline.diagnose itself, report and all."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    if seeds == 1:
        return pipeline.diagnose(spec, thresholds, scheme, max_memory, draws, histogram_bins, baseline)
    runs = [pipeline.diagnose(spec.with_seed(seed), thresholds, scheme, max_memory, draws, histogram_bins)
            for seed in seed_list(spec.seed, seeds)]
    combined = combine([run.report for run in runs], baseline)  # the baseline judges the combined figures
    return pipeline.Diagnosis(combined, runs[0].run, findings(combined))


def combine(reports: list[dict], baseline=None) -> dict:
    """One report from the reports of the same spec under different seeds (in seed order); see the module."""
    if not reports:
        raise ValueError("no reports to combine")
    names = [[layer.get("name") for layer in report["layers"]] for report in reports]
    if any(other != names[0] for other in names[1:]):
        raise ValueError("the reports do not have the same layers: not the same spec under other seeds")
    seeds = [report["seed"] for report in reports]
    combined = _figures(reports, skip=("seed",))
    combined["seed"] = seeds[0]
    combined["seeds"] = seeds
    combined["layers"] = [_figures(list(layers)) for layers in zip(*(report["layers"] for report in reports))]
    contrasts = [report.get("input_contrast") for report in reports]
    if all(contrasts):  # the contrast probe's figures, combined like a layer's
        combined["input_contrast"] = _figures(contrasts)
    kept, unstable = _findings(reports, seeds)
    combined["findings"] = kept
    combined["unstable_findings"] = unstable
    report.judge(combined, findings(combined), baseline)  # the verdict, once, from every finding
    return combined


def findings(report: dict) -> list:
    """The report's (kept) findings as checks.Finding, for checks.verdict and checks.fails."""
    indices = {layer.get("name"): layer.get("index") for layer in report.get("layers") or ()}
    return [checks.Finding(f["severity"], f["code"], f.get("layer"), f.get("message", ""), f.get("hint", ""),
                           indices.get(f.get("layer")), bool(f.get("suppressed")), f.get("reason"))
            for f in report.get("findings") or ()]


# --- figures ----------------------------------------------------------------------------------------------

def _is_figure(values: list) -> bool:
    """Floats (or null) are measured figures; ints equal in every seed (index, fans, units, batch) are the
    configuration, and so is everything else (names, thresholds, parameter_fans): taken from the first seed."""
    if not all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) for value in values):
        return False
    numbers = [value for value in values if value is not None]
    return bool(numbers) and (any(isinstance(value, float) for value in numbers) or len(set(values)) > 1)


def mean_spread(values: list) -> tuple:
    """(mean, sample standard deviation) of one figure over the seeds; (None, None) when a seed has none,
    (value, 0.0) when every seed has the same value; inf or NaN among them give a non-finite mean or spread."""
    if any(value is None for value in values):
        return None, None
    if all(value == values[0] for value in values):
        return values[0], 0.0
    mean = math.fsum(values) / len(values)
    if not math.isfinite(mean):
        return mean, math.nan
    return mean, math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1))


def _figures(items: list[dict], skip: tuple = ()) -> dict:
    """The first item, with each figure replaced by its mean and `spread` / `per_seed` beside them."""
    out, spread, per_seed = dict(items[0]), {}, {}
    for key in items[0]:
        values = [item.get(key) for item in items]
        if key in skip or key in ("spread", "per_seed") or not _is_figure(values):
            continue
        out[key], spread[key] = mean_spread(values)
        per_seed[key] = values
    out["spread"], out["per_seed"] = spread, per_seed
    return out


# --- findings ---------------------------------------------------------------------------------------------

# Findings about the whole signal are located where it first crosses a threshold, which moves between seeds:
# they are the same finding wherever they are located.
SIGNAL_CODES = ("exploding-activations", "vanishing-activations")


def _keyed(findings: list[dict]) -> dict:
    """{(code, layer, k): finding}, k counting repeats of a code on one layer, in the report's order; the
    signal's drift findings are keyed by their code alone (see SIGNAL_CODES)."""
    seen: dict = {}
    out = {}
    for finding in findings:
        base = (finding["code"], None if finding["code"] in SIGNAL_CODES else finding.get("layer"))
        out[base + (seen.get(base, 0),)] = finding
        seen[base] = seen.get(base, 0) + 1
    return out


def _rank(severity: str) -> int:
    return checks.SEVERITIES.index(severity) if severity in checks.SEVERITIES else 0


def _median(present: list) -> tuple:
    """The (seed, finding) whose message states the median value: the first number that differs between
    the messages (a monotone measure such as '1/11.7' reads the same either way); else the middle seed."""
    numbers = [[float(text) for text in _NUMBER.findall(finding.get("message", ""))] for _, finding in present]
    for position in range(min(len(found) for found in numbers)):
        values = [found[position] for found in numbers]
        if len(set(values)) > 1:
            order = sorted(range(len(present)), key=lambda i: (values[i], i))
            return present[order[(len(order) - 1) // 2]]
    return present[(len(present) - 1) // 2]


def _findings(reports: list[dict], seeds: list) -> tuple[list, list]:
    """(kept, unstable) findings, each most severe first, in the reports' order otherwise."""
    per_seed = [_keyed(report.get("findings") or []) for report in reports]
    kept, unstable = [], []
    for key in dict.fromkeys(key for keyed in per_seed for key in keyed):  # first seen first
        present = [(seed, keyed[key]) for seed, keyed in zip(seeds, per_seed) if key in keyed]
        every = len(present) == len(reports)
        pick = min if every else max
        severity = pick((finding["severity"] for _, finding in present), key=_rank)
        _, chosen = _median([(seed, finding) for seed, finding in present if finding["severity"] == severity])
        data = dict(chosen)
        data["per_seed"] = [{"seed": seed, "severity": finding["severity"], "message": finding["message"]}
                            for seed, finding in present]
        if every:
            kept.append(data)
        else:
            data["seeds"] = [seed for seed, _ in present]
            unstable.append(data)
    order = lambda finding: -_rank(finding["severity"])  # noqa: E731 - stable: the reports' order within a severity
    return sorted(kept, key=order), sorted(unstable, key=order)
