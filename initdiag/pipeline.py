"""One check of one spec: build, run, predict, find — the sequence `check` and `compare` share."""

from __future__ import annotations

from typing import NamedTuple

from initdiag import checks, network, propagate, report, theory


class Diagnosis(NamedTuple):
    report: dict  # JSON-shaped, see report.build
    run: object  # stats.RunStats
    findings: list  # checks.Finding


def diagnose(spec, thresholds=None, scheme: str | None = None, max_memory=None, draws=None, histogram_bins=0) -> Diagnosis:
    """Initialise `spec`, propagate one batch, predict its mean-field variances and find problems."""
    # the spec's own win; their names (and its ignore: codes) are checked here, against the declared checks
    thresholds = (thresholds or checks.Thresholds()).override(checks.spec_thresholds(spec))
    run = propagate.run(network.build(spec, max_memory, draws), histogram_bins)
    moments = [layer.weight_std**2 + layer.weight_mean**2 if layer.weight_std is not None else None for layer in run.layers]
    predicted = theory.mean_field(spec, run.input_second_moment, moments)
    findings = checks.find(run, spec, thresholds, theory.phase(predicted, spec))
    return Diagnosis(report.build(spec, run, findings, scheme, thresholds, predicted), run, findings)
