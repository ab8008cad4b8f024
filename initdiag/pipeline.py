"""One check of one spec: build, run, predict, find, report. `check`, `compare` and `recommend` all go
through `diagnose`, so a spec's own `thresholds:` and every later change apply to the three alike.

The flow is one way: statistics (stats.RunStats) -> findings (checks.Finding, and the baseline's comparison)
-> the report, whose verdict is computed once from all of them (report.judge)."""

from __future__ import annotations

from typing import NamedTuple

from initdiag import checks, network, propagate, report, theory, threads


class Diagnosis(NamedTuple):
    """What one check produces. Plain NamedTuples, dicts and floats: it pickles, so it crosses the
    process boundary of --jobs unchanged."""

    report: dict  # JSON-shaped, see report.build
    run: object  # stats.RunStats: the statistics the report and every later stage read
    findings: list  # checks.Finding, the baseline's included: what checks.fails judges


def diagnose(spec, thresholds=None, scheme: str | None = None, max_memory=None, draws=None, histogram_bins=0,
             baseline=None, built=None) -> Diagnosis:
    """Initialise `spec`, propagate one batch, predict its mean-field variances and find problems.

    `baseline` (baseline.Reference) adds the comparison with a recorded baseline to the findings before the
    verdict; `built` is `network.build(spec, max_memory, draws)` when the caller needs the network itself
    (recommend keeps its drawn weights). A MemoryError becomes SpecErrors saying what the run needed and what fits."""
    # the spec's own thresholds win; their names (and its ignore: codes) are checked against the declared checks
    thresholds = (thresholds or checks.Thresholds()).override(checks.spec_thresholds(spec))
    try:
        with threads.sized_to(spec):  # one BLAS thread for small GEMMs: waking more costs more than it saves
            run = propagate.run(built if built is not None else network.build(spec, max_memory, draws), histogram_bins)
        moments = [layer.weight_std**2 + layer.weight_mean**2 if layer.weight_std is not None else None for layer in run.layers]
        predicted = theory.mean_field(spec, run.input_second_moment, moments)
        findings = checks.find(run, spec, thresholds, theory.phase(predicted, spec))
        data = report.assemble(spec, run, findings, scheme, thresholds, predicted)
    except MemoryError as error:  # the estimate said it fits, the machine disagreed: the input's problem (exit 2)
        raise network.out_of_memory(spec, error) from None
    return Diagnosis(data, run, report.judge(data, findings, baseline))
