"""Compare weight-initialization schemes on one network: run each, score it, rank them.

Every scheme runs on the same input batch and targets (same seed), and schemes of one
family share each layer's standard sample (common random numbers), so differences between
rows are the schemes', not sampling noise. A scheme's report here is identical to
`initdiag check --scheme` of that scheme with the same seed.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

from initdiag import activations, initspec, pipeline, schemes
from initdiag.spec import NetworkSpec

# The families every default comparison includes, besides the spec's own and the recommended schemes.
DEFAULT_SCHEMES = ("xavier", "relu", "lecun_normal", "orthogonal")
VERDICT_ORDER = {"healthy": 0, "warning": 1, "failing": 2}


class Score(NamedTuple):
    """How a scheme ranks: verdict first, then distance from flat profiles, then dead and saturated units."""

    verdict: str
    distance: float  # RMS of the log10 activation and gradient profiles' deviations from flat
    dead: float  # the worst layer's dead fraction
    saturated: float  # the worst layer's saturated fraction
    health: float  # 0..100, for people: 100 / (1 + distance) · (1 - dead) · (1 - saturated); 0 when failing on symmetry or overflow

    def key(self, name: str) -> tuple:
        return (VERDICT_ORDER[self.verdict], self.distance, self.dead + self.saturated, name)


def candidates(spec: NetworkSpec, names: list[str] | None, allow_custom: bool = False) -> list[initspec.InitSpec]:
    """The schemes to compare: `names` (aliases allowed; "all" = every scheme that applies), or by
    default the spec's own, the rules-of-thumb recommendations for its activations, and the
    Xavier, He, LeCun and orthogonal families. Duplicates (by their display name) are dropped."""
    if names is None:
        found = [layer.init for layer in spec.layers if layer.init is not None and not layer.init.label]  # not a supplied or tied label
        found += [_named(name) for layer in spec.layers for name in activations.ACTIVATIONS[layer.activation.name].recommended]
        found += [_named(name) for name in DEFAULT_SCHEMES]
    elif [name.strip().lower() for name in names] == ["all"]:
        found = [_named(name) for name in _applicable(spec)] + [
            layer.init for layer in spec.layers
            if layer.init is not None and layer.init.scheme in ("supplied", "custom") and not layer.init.label
        ]
    else:
        return _unique([initspec.parse(name, "--schemes", allow_custom) for name in names])
    # Unasked-for candidates that cannot initialise every layer (a supplied array of one layer's
    # shape, identity on a non-square layer) are left out rather than failing the comparison.
    return _unique([init for init in found if not _shape_problems(spec, init)])


def _shape_problems(spec: NetworkSpec, init) -> bool:
    from initdiag.spec import shape_problems

    return bool(shape_problems(spec._replace(layers=tuple(
        layer._replace(init=init) if layer.init is not None else layer for layer in spec.layers))))


def _unique(inits: list) -> list[initspec.InitSpec]:
    """The first of each display name, in order."""
    unique: dict[str, initspec.InitSpec] = {}
    for init in inits:
        unique.setdefault(init.display, init)
    return list(unique.values())


def _named(name: str) -> initspec.InitSpec:
    return initspec.parse(name, "--schemes")


def _applicable(spec: NetworkSpec) -> list[str]:
    """Every scheme that needs no value (candidates() then drops those that fit no layer, e.g. identity)."""
    needs_value = {"constant", "supplied", "custom"}
    return [name for name in schemes.SCHEMES if name not in needs_value]


def replace_inits(spec: NetworkSpec, init: initspec.InitSpec, keep_overrides: bool) -> NetworkSpec:
    """`spec` with every layer's weight init replaced, or with --keep-overrides only the layers
    whose init comes from the defaults (not written on the layer itself)."""
    if not keep_overrides:
        return spec.with_init(init)
    layers = tuple(layer if layer.init is None or layer.init.path.startswith("layers") else layer._replace(init=init)
                   for layer in spec.layers)
    return spec._replace(layers=layers, scheme_override=init)


def run_scheme(spec: NetworkSpec, init, keep_overrides: bool, thresholds, max_memory=None, draws=None) -> pipeline.Diagnosis:
    """The check of `spec` under `init`: its report (with "scheme" set), statistics and findings."""
    scheme_spec = replace_inits(spec, init, keep_overrides)
    return pipeline.diagnose(scheme_spec, thresholds, init.display, max_memory, draws)


def _run_job(job) -> pipeline.Diagnosis:
    return run_scheme(*job)  # a Diagnosis pickles (plain NamedTuples, dicts and floats): it crosses --jobs processes


def run_all(spec, inits, keep_overrides, thresholds, max_memory=None, jobs: int = 1, progress=None) -> list[pipeline.Diagnosis]:
    """Every scheme's diagnosis, in the order given; `jobs` > 1 runs them in processes (same results)."""
    if jobs > 1 and len(inits) > 1:
        from concurrent.futures import ProcessPoolExecutor

        work = [(spec, init, keep_overrides, thresholds, max_memory) for init in inits]
        with ProcessPoolExecutor(max_workers=min(jobs, len(inits))) as pool:
            reports = []
            for result in pool.map(_run_job, work):
                reports.append(result)
                if progress:
                    progress()
            return reports
    draws: dict = {}
    reports = []
    for init in inits:
        reports.append(run_scheme(spec, init, keep_overrides, thresholds, max_memory, draws))
        if progress:
            progress()
    return reports


def _log_ratio(value: float, reference: float) -> float:
    if not (math.isfinite(value) and math.isfinite(reference)) or value <= 0 or reference <= 0:
        return math.inf
    return math.log10(value / reference)


def activation_profile(diagnosis: pipeline.Diagnosis) -> list[float]:
    """log10 of each layer's signal second moment over the input's (0 = flat)."""
    reference = diagnosis.run.input_second_moment
    return [_log_ratio(layer.signal_second_moment, reference) for layer in diagnosis.run.layers]


def gradient_profile(diagnosis: pipeline.Diagnosis) -> list[float]:
    """log10 of each hidden layer's gradient energy, grad_var · units (what He init conserves
    across dense widths), over the last hidden layer's (0 = flat). The output layer is left out: its
    gradient is the loss's own (for softmax, -1/(B·p) at the label), not a signal that travelled."""
    energy = [layer.grad_var * (layer.units or layer.fan_out) for layer in diagnosis.run.layers[:-1]]
    return [_log_ratio(value, energy[-1]) for value in energy]


def score(diagnosis: pipeline.Diagnosis) -> Score:
    """The scheme's score, from its statistics and findings (and the verdict its report was built with)."""
    layers = diagnosis.run.layers
    deviations = activation_profile(diagnosis) + gradient_profile(diagnosis)[:-1]
    distance = math.sqrt(sum(d * d for d in deviations) / len(deviations)) if deviations else 0.0
    dead = max(layer.dead_fraction for layer in layers)
    saturated = max(layer.saturation for layer in layers)
    broken = any(f.code in ("symmetry", "overflow") for f in diagnosis.findings)
    health = 0.0 if broken or not math.isfinite(distance) else 100 / (1 + distance) * (1 - dead) * (1 - saturated)
    return Score(diagnosis.report["verdict"], distance, dead, saturated, health)


def summary(diagnosis: pipeline.Diagnosis) -> dict:
    """One scheme's row: its score and the figures people compare schemes by."""
    scored = score(diagnosis)
    layers = diagnosis.run.layers
    first, last = layers[0], layers[-1]
    weighted = [layer for layer in layers if layer.weight_grad_var is not None] or [first]
    grad_first, grad_last = weighted[0], weighted[-1]
    worst = next((f for f in diagnosis.findings if f.severity != "info"), None)
    grad_ratio = (math.sqrt(grad_first.weight_grad_var / grad_last.weight_grad_var)
                  if grad_last.weight_grad_var and grad_first.weight_grad_var is not None else math.inf)
    return {
        "verdict": scored.verdict,
        "health": scored.health,
        "distance": scored.distance,
        "worst_layer": worst.layer if worst else None,
        "worst_code": worst.code if worst else None,
        "activation_drift": last.signal_second_moment / first.signal_second_moment
        if first.signal_second_moment > 0 else math.inf,
        "gradient_ratio": grad_ratio,
        "max_dead_fraction": scored.dead,
        "max_saturation": scored.saturated,
        "max_symmetry": max(layer.symmetry for layer in layers),
        "activation_profile": activation_profile(diagnosis),
    }


def ranking(diagnoses: list[pipeline.Diagnosis]) -> list[str]:
    """Scheme names, best first; ties broken by name so the order is stable."""
    return [d.report["scheme"] for d in sorted(diagnoses, key=lambda d: score(d).key(d.report["scheme"]))]


def build(spec: NetworkSpec, diagnoses: list[pipeline.Diagnosis]) -> dict:
    """The compare report (JSON-shaped): every scheme's check report and the ranking, scored from the
    schemes' statistics and findings (never from the reports' figures read back)."""
    from initdiag import __version__

    order = ranking(diagnoses)
    by_name = {d.report["scheme"]: d for d in diagnoses}
    return {
        "initdiag_version": __version__,
        "spec": spec.file,
        "seed": spec.seed,
        "reports": [by_name[name].report for name in order],
        "ranking": order,
        "scores": {name: summary(by_name[name]) for name in order},
    }


def estimated_seconds(spec: NetworkSpec, schemes_count: int) -> float:
    """A rough run time, to decide whether a progress bar is worth showing: the matmul work of
    forward and backward at a conservative 20 GFLOP/s."""
    flops = 6 * spec.batch * sum((layer.fan_in or 0) * layer.units for layer in spec.layers)
    return schemes_count * flops / 20e9


def resolve_jobs(value: str) -> int:
    """`--jobs`: a positive number, or "auto" for the number of cores."""
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    jobs = int(value)
    if jobs < 1:
        raise ValueError(value)
    return jobs
