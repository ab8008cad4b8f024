"""Multi-seed confidence (initdiag/seeds.py, `check --seeds N`).

Pinned here: the combination on hand-built per-seed reports (a finding every seed has is kept at its least
severe severity, one only some seeds have goes to unstable_findings with those seeds and never counts; mean and
sample standard deviation exact on hand-built numbers); `--seeds 1` is byte-identical to no flag; `--seeds 3`'s
per-seed values are exactly three separate `--seed` runs'; and on the batch-8 sample a single seed's finding
does not hold across seeds (derived from separate runs, not written down).
"""

from __future__ import annotations

import json
import math
import statistics
from functools import lru_cache
from pathlib import Path

import pytest

from initdiag import checks, pipeline, seeds, spec
from initdiag.reporters import REPORTERS, text
from conftest import invoke

ROOT = Path(__file__).resolve().parent.parent
SMALL = "sample_specs/small_batch_tanh.yaml"  # batch 8: figures move from seed to seed
MNIST = "sample_specs/mnist_relu_he.yaml"
TANH = "sample_specs/deep_tanh_xavier.yaml"


run = invoke  # the CLI in process at 80 columns without colour


@lru_cache(maxsize=None)
def cached(*args) -> tuple[int, str]:
    result = run(*args)
    return result.exit_code, result.stdout


def json_of(*args) -> dict:
    code, out = cached(*args, "--format", "json")
    assert code in (0, 1), out
    return json.loads(out)


# --------------------------------------------------------------------------- hand-built reports


def layer(index: int, name: str, **figures) -> dict:
    data = {"index": index, "name": name, "kind": "dense", "activation": "relu", "init": "relu", "fan_in": 4,
            "fan_out": 4, "weight_mean": 0.0, "weight_std": 0.5, "weight_std_expected": 0.5, "preact_mean": 0.0,
            "preact_var": 1.0, "act_mean": 0.0, "act_var": 1.0, "grad_var": 1e-3, "weight_grad_var": 1e-4,
            "dead_fraction": 0.0, "saturation": 0.0, "symmetry": 0.0, "units": 4, "grad_var_first_step": None,
            "grad_var_last_step": None, "parameter_fans": None, "preact_var_theory": None, "chi": None}
    data.update(figures)
    return data


def finding(severity: str, code: str, layer_name: str | None, message: str = "m", **extra) -> dict:
    return {"severity": severity, "code": code, "layer": layer_name, "message": message, "hint": f"hint {message}",
            "file": "net.yaml", "line": 1, "column": 1, **extra}


def report(seed: int, findings: list, layers: list | None = None, input_var: float = 1.0) -> dict:
    layers = layers if layers is not None else [layer(0, "dense_0"), layer(1, "dense_1")]
    return {"initdiag_version": "0", "spec": "net.yaml", "name": "net", "scheme": None, "seed": seed, "batch": 8,
            "dtype": "float32", "loss": "mse", "input_distribution": "normal", "input_mean": 0.0,
            "input_var": input_var, "thresholds": checks.Thresholds()._asdict(), "verdict": "ignored",
            "findings": findings, "layers": layers}


def test_a_finding_in_every_seed_is_kept_at_its_least_severe_severity():
    combined = seeds.combine([
        report(0, [finding("error", "dead-units", "dense_1", "dense_1: 55% of units output 0")]),
        report(1, [finding("warning", "dead-units", "dense_1", "dense_1: 30% of units output 0")]),
        report(2, [finding("warning", "dead-units", "dense_1", "dense_1: 12% of units output 0")]),
    ])
    [kept] = combined["findings"]
    assert (kept["severity"], kept["code"], kept["layer"]) == ("warning", "dead-units", "dense_1")
    # the median of the seeds at that severity (30% and 12%: the lower median, 12%), its hint with it
    assert kept["message"] == "dense_1: 12% of units output 0" and kept["hint"] == "hint dense_1: 12% of units output 0"
    assert [(s["seed"], s["severity"]) for s in kept["per_seed"]] == [(0, "error"), (1, "warning"), (2, "warning")]
    assert combined["unstable_findings"] == []
    assert combined["verdict"] == "warning"


def test_the_message_is_the_median_seeds_by_the_number_it_states():
    messages = ["grows to 40x the input's at dense_1", "grows to 12x the input's at dense_1",
                "grows to 15x the input's at dense_1", "grows to 90x the input's at dense_1",
                "grows to 13x the input's at dense_1"]
    combined = seeds.combine([report(s, [finding("warning", "exploding-activations", "dense_1", m)])
                              for s, m in enumerate(messages)])
    assert combined["findings"][0]["message"] == "grows to 15x the input's at dense_1"
    # '1/x' reads the other way round; the median is the same seed
    shrinks = [f"shrinks to 1/{m.split()[2][:-1]} of the input's" for m in messages]
    combined = seeds.combine([report(s, [finding("warning", "vanishing-activations", None, m)])
                              for s, m in enumerate(shrinks)])
    assert combined["findings"][0]["message"] == "shrinks to 1/15 of the input's"


def test_a_finding_in_some_seeds_is_unstable_and_never_counts():
    combined = seeds.combine([
        report(0, [finding("info", "edge-of-chaos", None), finding("error", "saturation", "dense_0", "60%")]),
        report(1, [finding("info", "edge-of-chaos", None)]),
        report(2, [finding("info", "edge-of-chaos", None), finding("warning", "saturation", "dense_0", "20%")]),
    ])
    assert [(f["code"], f["layer"]) for f in combined["findings"]] == [("edge-of-chaos", None)]
    [unstable] = combined["unstable_findings"]
    assert (unstable["code"], unstable["layer"], unstable["seeds"]) == ("saturation", "dense_0", [0, 2])
    assert unstable["severity"] == "error" and unstable["message"] == "60%"  # the most severe it reached
    assert [s["seed"] for s in unstable["per_seed"]] == [0, 2]
    assert combined["verdict"] == "healthy"
    assert checks.verdict(seeds.findings(combined)) == "healthy"
    assert not checks.fails(seeds.findings(combined), "warning")


def test_same_code_on_another_layer_is_another_finding_and_repeats_are_matched_in_order():
    combined = seeds.combine([
        report(0, [finding("warning", "unused-ignore", "dense_0", "a"), finding("warning", "unused-ignore", "dense_0", "b"),
                   finding("warning", "dead-units", "dense_0")]),
        report(1, [finding("warning", "unused-ignore", "dense_0", "a"), finding("warning", "unused-ignore", "dense_0", "b"),
                   finding("warning", "dead-units", "dense_1")]),
    ])
    assert [(f["code"], f["message"]) for f in combined["findings"]] == [("unused-ignore", "a"), ("unused-ignore", "b")]
    assert sorted((f["layer"], f["seeds"]) for f in combined["unstable_findings"]) == [("dense_0", [0]), ("dense_1", [1])]


def test_kept_findings_are_most_severe_first_after_the_severities_change():
    combined = seeds.combine([
        report(0, [finding("error", "dead-units", "dense_0"), finding("warning", "saturation", "dense_1")]),
        report(1, [finding("info", "dead-units", "dense_0"), finding("warning", "saturation", "dense_1")]),
    ])
    assert [(f["code"], f["severity"]) for f in combined["findings"]] == [("saturation", "warning"), ("dead-units", "info")]


def test_suppressed_findings_stay_suppressed_and_uncounted():
    quiet = dict(suppressed=True, reason="known")
    combined = seeds.combine([report(s, [finding("error", "saturation", "dense_1", **quiet)]) for s in (0, 1)])
    [kept] = seeds.findings(combined)
    assert kept.suppressed and kept.reason == "known" and kept.layer_index == 1
    assert combined["verdict"] == "healthy"


def test_figures_are_means_with_the_sample_standard_deviation_and_every_seeds_value():
    values = [1.0, 2.0, 3.0]
    irregular = [0.1, 0.25, 0.7]
    combined = seeds.combine([
        report(s, [], [layer(0, "dense_0", act_var=values[s], grad_var=irregular[s], weight_grad_var=None if s == 1 else 1.0,
                             preact_var=[1.0, math.inf, 2.0][s]),
                       layer(1, "dense_1")], input_var=values[s])
        for s in range(3)])
    first, second = combined["layers"]
    assert first["act_var"] == 2.0 and first["spread"]["act_var"] == 1.0
    assert first["per_seed"]["act_var"] == values
    assert first["grad_var"] == pytest.approx(statistics.fmean(irregular), rel=1e-15)
    assert first["spread"]["grad_var"] == pytest.approx(statistics.stdev(irregular), rel=1e-15)
    assert first["weight_grad_var"] is None and first["spread"]["weight_grad_var"] is None  # a seed had none
    assert first["per_seed"]["weight_grad_var"] == [1.0, None, 1.0]
    assert first["preact_var"] == math.inf and math.isnan(first["spread"]["preact_var"])
    # equal in every seed: the value itself, spread 0; configuration (ints, strings) untouched
    assert second["act_var"] == 1.0 and second["spread"]["act_var"] == 0.0
    assert first["fan_in"] == 4 and isinstance(first["fan_in"], int) and "fan_in" not in first["spread"]
    assert "chi" not in first["spread"]  # null in every seed: nothing to average
    assert combined["input_var"] == 2.0 and combined["spread"]["input_var"] == 1.0
    assert combined["per_seed"]["input_var"] == values
    assert combined["seed"] == 0 and combined["seeds"] == [0, 1, 2] and combined["batch"] == 8
    assert set(report(0, [])) <= set(combined)  # every key of a single report


def test_reports_of_different_networks_are_refused():
    with pytest.raises(ValueError, match="same layers"):
        seeds.combine([report(0, []), report(1, [], [layer(0, "dense_0")])])
    with pytest.raises(ValueError):
        seeds.diagnose(spec.load(ROOT / MNIST), 0)


def test_the_text_report_shows_mean_and_spread_the_seeds_and_the_unstable_findings():
    combined = seeds.combine([
        report(s, [finding("warning", "dead-units", "dense_1")] if s == 4 else [],
               [layer(0, "dense_0", act_var=v), layer(1, "dense_1")])
        for s, v in zip((3, 4, 5), (1.95, 1.98, 2.01))])
    out = text.render(combined, width=200)
    assert " · seeds 3-5 (3) · batch 8 · " in out.splitlines()[0]
    assert "1.98±0.03" in out  # mean 1.98, sample sd 0.03
    assert "not in every seed, not counted: dead-units dense_1 (seed 4)" in out
    assert out.rstrip().endswith("verdict: healthy")
    assert text.seeds_label([0, 2, 7]) == "seeds 0, 2, 7 (3)"


# --------------------------------------------------------------------------- real runs


def test_one_seed_is_pipeline_diagnose_itself():
    network = spec.load(ROOT / SMALL)
    assert seeds.diagnose(network, 1).report == pipeline.diagnose(network).report


def test_the_batch_8_sample_has_a_single_seed_finding_that_does_not_hold_across_seeds():
    network = spec.load(ROOT / SMALL)
    singles = [pipeline.diagnose(network.with_seed(seed)).report for seed in range(5)]
    key = lambda f: (f["code"], None if f["code"] in seeds.SIGNAL_CODES else f["layer"])  # noqa: E731 - as seeds keys them
    keys = [{key(f) for f in single["findings"]} for single in singles]
    everywhere = set.intersection(*keys)
    seed0_problems = {key(f) for f in singles[0]["findings"] if f["severity"] != "info"}
    assert seed0_problems - everywhere, "the sample should show a seed-0 warning that other seeds lack"
    combined = seeds.diagnose(network, 5).report
    assert {key(f) for f in combined["findings"]} == everywhere
    unstable = {key(f): f["seeds"] for f in combined["unstable_findings"]}
    assert unstable == {k: [s for s in range(5) if k in keys[s]] for k in set.union(*keys) - everywhere}
    assert seed0_problems - everywhere <= set(unstable)
    assert combined["verdict"] == checks.verdict(seeds.findings(combined))


def test_a_drift_finding_is_the_same_finding_wherever_a_seed_locates_it():
    reports = [{"findings": [{"severity": "warning", "code": "vanishing-activations", "layer": layer,
                              "message": f"shrinks to 1/{value} of the input's", "hint": ""}]}
               for layer, value in (("dense_3", 11.7), ("dense_4", 12.5), ("dense_3", 10.9))]
    kept, unstable = seeds._findings(reports, [0, 1, 2])
    assert [(f["code"], f["layer"]) for f in kept] == [("vanishing-activations", "dense_3")] and not unstable


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("path", [MNIST, TANH, SMALL])
def test_seeds_1_is_identical_to_no_flag(path):
    for extra in ((), ("--format", "json")):
        assert cached("check", path, "--seeds", "1", *extra) == cached("check", path, *extra)


def test_seeds_3_json_carries_exactly_three_separate_seed_runs():
    combined = json_of("check", SMALL, "--seeds", "3", "--seed", "5")
    singles = [json_of("check", SMALL, "--seed", str(seed)) for seed in (5, 6, 7)]
    assert combined["seed"] == 5 and combined["seeds"] == [5, 6, 7]
    assert combined["per_seed"]["input_var"] == [single["input_var"] for single in singles]
    checked = 0
    for index, layer_data in enumerate(combined["layers"]):
        assert layer_data["per_seed"], "every layer has figures"
        for key, values in layer_data["per_seed"].items():
            assert values == [single["layers"][index][key] for single in singles], (index, key)
            mean, spread = seeds.mean_spread(values)
            assert (layer_data[key], layer_data["spread"][key]) == (mean, spread)
            checked += 1
    assert checked > 10 * len(combined["layers"])
    keys = [{(f["code"], f["layer"]) for f in single["findings"]} for single in singles]
    assert {(f["code"], f["layer"]) for f in combined["findings"]} == set.intersection(*keys)
    for kept in combined["findings"]:
        assert [s["message"] for s in kept["per_seed"]] == [
            next(f["message"] for f in single["findings"] if (f["code"], f["layer"]) == (kept["code"], kept["layer"]))
            for single in singles]


def test_exit_code_and_text_follow_the_findings_every_seed_has():
    combined = json_of("check", SMALL, "--seeds", "5")
    problems = [f for f in combined["findings"] if f["severity"] in ("warning", "error") and not f.get("suppressed")]
    result = run("check", SMALL, "--seeds", "5", "--fail-on", "warning")
    assert result.exit_code == (1 if problems else 0), result.stdout
    lines = result.stdout.splitlines()
    assert "seeds 0-4 (5)" in result.stdout.replace("\n", " ") and "±" in result.stdout
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert lines[-1].startswith(f"verdict: {combined['verdict']}")
    assert ("not in every seed, not counted: " in result.stdout) == bool(combined["unstable_findings"])


def test_seeds_usage_errors_exit_2():
    result = run("check", SMALL, "--seeds", "3", "--plot", "out.png")
    assert result.exit_code == 2 and "--plot" in result.stderr and "--seeds" in result.stderr
    assert run("check", SMALL, "--seeds", "0").exit_code == 2


def test_many_specs_ci_formats_and_the_configuration(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    for name in (SMALL, MNIST):
        (folder / Path(name).name).write_text((ROOT / name).read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "initdiag.toml").write_text("seeds = 2\n")
    data = json.loads(run("check", "specs", "--format", "json").stdout)
    assert [r["seeds"] for r in data["reports"]] == [[0, 1], [0, 1]]
    assert "seeds" not in json.loads(run("check", "specs/mnist_relu_he.yaml", "--seeds", "1", "--format", "json").stdout)
    for ci_format in (name for name, reporter in REPORTERS.items() if reporter.scope == "run"):  # every whole-run format
        result = run("check", "specs", "--format", ci_format)
        assert result.exit_code in (0, 1) and result.stdout, ci_format
    (tmp_path / "initdiag.toml").write_text("seeds = 0\n")
    result = run("check", "specs")
    assert result.exit_code == 2 and "seeds" in result.stderr


def test_baselines_record_the_seeds_and_compare_like_with_like(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    saved = tmp_path / "baseline.json"
    assert run("check", MNIST, "--seeds", "2", "--save-baseline", saved, "--isolated").exit_code == 0
    assert json.loads(saved.read_text())["specs"][MNIST]["seeds"] == [0, 1]
    same = json.loads(run("check", MNIST, "--seeds", "2", "--baseline", saved, "--isolated", "--format", "json").stdout)
    assert not [f for f in same["findings"] if f["code"] in ("regression", "baseline-mismatch")]
    single = json.loads(run("check", MNIST, "--baseline", saved, "--isolated", "--format", "json").stdout)
    [mismatch] = [f for f in single["findings"] if f["code"] == "baseline-mismatch"]
    assert "seeds [0, 1] \u2192 [0]" in mismatch["message"]
