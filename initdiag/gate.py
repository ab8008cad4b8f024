"""initdiag as a CI gate: one spec's check with everything the command line and the configuration
decided, run over many specs (in processes with --jobs), and the run's summary. Plain data in and out."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class SpecCheck(NamedTuple):
    """One spec's check with everything the command line and the configuration decided (picklable, for --jobs)."""

    configuration: object
    cli: dict
    allow_custom: bool
    eval_mode: bool
    scheme: str | None
    memory_bound: int | None
    base: dict | None
    baseline_factor: float
    histogram_bins: int

    def __call__(self, spec_path: Path):
        """(report, run statistics, findings, fail_on); SpecErrors for an invalid spec.

        With `seeds` > 1 (settings: --seeds, or the configuration) the report combines that many seeds from the
        spec's (initdiag.seeds) and the run statistics are the first seed's."""
        from initdiag import checks, seeds, spec

        settings = self.configuration.settings(spec_path, self.cli)  # defaults < config file < its overrides < flags
        network_spec = spec.load(spec_path, allow_custom=self.allow_custom)._replace(eval=self.eval_mode)
        network_spec, label = prepared(network_spec, settings.seed, settings.batch, self.scheme, self.allow_custom)
        reference = None
        if self.base is not None:  # regressions and improvements are findings like the checks': before the verdict
            from initdiag import baseline

            reference = baseline.Reference(self.base, self.baseline_factor, network_spec)
        result, run, findings = seeds.diagnose(network_spec, settings.seeds, checks.Thresholds(**settings.thresholds),
                                               label, self.memory_bound, histogram_bins=self.histogram_bins,
                                               baseline=reference)
        return result, run, findings, settings.fail_on

    def outcome(self, spec_path: Path):
        """(report, None, failed) or (None, problems as plain tuples, False): what crosses a process boundary."""
        from initdiag import checks
        from initdiag.yamlsource import SpecErrors

        try:
            result, _, findings, fail_on = self(spec_path)
        except SpecErrors as errors:  # with the problems of the names the checks judge (thresholds, codes)
            return None, [(p.location, p.path, p.message, p.file) for p in checks.completed(errors).problems], False
        return result, None, checks.fails(findings, fail_on)


def prepared(network_spec, seed: int | None, batch: int | None, scheme: str | None, allow_custom: bool,
             shown_as: str = "--scheme"):
    """(the spec with a run's settings applied, the scheme's label for the report): `seed` and `batch` replace
    the spec's (a batch from an .npy file keeps its own), `scheme` (YAML text: a name or a mapping) replaces every
    layer's weight init. SpecErrors for a scheme that does not parse or fit. Shared by `check` and initdiag.check."""
    from initdiag import initspec

    if seed is not None:
        network_spec = network_spec.with_seed(seed)
    if batch is not None and not network_spec.input_distribution.endswith(".npy"):
        network_spec = network_spec._replace(batch=batch)
    if scheme is None:
        return network_spec, None
    network_spec = network_spec.with_init(initspec.parse(scheme, shown_as, allow_custom, base_dir=Path.cwd()))
    return network_spec, network_spec.scheme_override.display


def run_specs(check: SpecCheck, files: list, jobs: int):
    """Each spec's outcome, in the files' order; in `jobs` processes when asked (the same results)."""
    from initdiag.yamlsource import SpecProblem

    if jobs > 1 and len(files) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(files))) as pool:
            outcomes = list(pool.map(check.outcome, files))
    else:
        outcomes = [check.outcome(file) for file in files]
    for result, problems, failed in outcomes:
        yield result, [SpecProblem(*problem) for problem in problems or ()], failed


def problem_data(problem) -> dict:
    """An invalid spec's problem for the CI formats: where, and what."""
    where = problem.location
    return {"file": problem.file, "line": where.line if where else None, "column": where.column if where else None,
            "message": f"{problem.path}: {problem.message}" if problem.path else problem.message}


def summary(reports: list, invalid: int, files: int, seconds: float) -> dict:
    verdicts = [report["verdict"] for report in reports]
    return {"specs": files, "healthy": verdicts.count("healthy"), "warning": verdicts.count("warning"),
            "failing": verdicts.count("failing"), "invalid": invalid, "seconds": round(seconds, 3)}


def summary_line(summary: dict) -> str:
    parts = [f"{summary[key]} {key}" for key in ("healthy", "warning", "failing", "invalid") if summary[key]]
    return f"checked {summary['specs']} spec(s) in {summary['seconds']:.1f} s: {', '.join(parts) or 'nothing to check'}"
