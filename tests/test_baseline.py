"""Baselines (initdiag/baseline.py): recording a run's figures and findings, and reporting what moved.

Pinned here: the file round-trips and is byte-identical run after run with the same seed (and
differs with another seed, so the identity is not vacuous); an unchanged spec gives nothing; a
figure moved beyond the factor, a new or worsened finding, and a figure turning non-finite are
regressions on the right layer with the factor in the message; a finding that went away is an
improvement; the factor is configurable; near-zero figures do not regress; a bad file is a
BaselineError naming the file and the problem.
"""

from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from pathlib import Path

import pytest

from initdiag import __version__, baseline, initspec, pipeline, spec
from initdiag.baseline import BaselineError

ROOT = Path(__file__).resolve().parent.parent
MNIST = "sample_specs/mnist_relu_he.yaml"  # healthy: dense_0, dense_1 (relu), dense_2 (softmax)


def _diagnose(path=MNIST, seed=None, init=None) -> dict:
    network_spec = spec.load(ROOT / path, shown_as=path)
    if seed is not None:
        network_spec = network_spec.with_seed(seed)
    if init is not None:
        network_spec = network_spec.with_init(initspec.parse(init, "test"))
    return pipeline.diagnose(network_spec).report


@lru_cache(maxsize=None)
def _cached(path=MNIST, seed=None, init=None) -> dict:
    return _diagnose(path, seed, init)


def report(path=MNIST, seed=None, init=None) -> dict:
    """A fresh copy of a (cached) check report, safe to edit."""
    return copy.deepcopy(_cached(path, seed, init))


def layer(rep: dict, name: str) -> dict:
    return next(entry for entry in rep["layers"] if entry["name"] == name)


def codes(findings) -> list[tuple]:
    return [(f["severity"], f["code"], f["layer"]) for f in findings]


# --- the file ---------------------------------------------------------------------------------

def test_snapshot_dumps_load_round_trip(tmp_path):
    base = baseline.snapshot([report(), report("sample_specs/deep_tanh_xavier.yaml")])
    text = baseline.dumps(base)
    path = tmp_path / "baseline.json"
    path.write_text(text, encoding="utf-8")
    loaded = baseline.load(path)
    assert loaded == base
    assert baseline.dumps(loaded) == text
    assert sorted(loaded["specs"]) == ["sample_specs/deep_tanh_xavier.yaml", MNIST]
    assert loaded["format_version"] == baseline.FORMAT_VERSION and loaded["initdiag_version"] == __version__
    # the round-tripped baseline still compares as the original does
    assert baseline.compare(report(), loaded) == []


def test_same_spec_and_seed_give_byte_identical_baselines():
    first = baseline.dumps(baseline.snapshot([_diagnose()]))
    second = baseline.dumps(baseline.snapshot([_diagnose()]))
    assert first == second
    # not vacuous: another seed draws other weights, and the file shows it
    assert baseline.dumps(baseline.snapshot([_diagnose(seed=1)])) != first


def test_file_is_stable_text():
    text = baseline.dumps(baseline.snapshot([report()]))
    assert text.endswith("}\n") and not text.endswith("\n\n")
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"  # sorted keys, indent 2
    assert "seconds" not in text and "time" not in text  # nothing that changes run to run
    figures = data["specs"][MNIST]["layers"]["dense_0"]
    assert set(data["specs"][MNIST]["layers"]) == {"dense_0", "dense_1", "dense_2"}
    for name in ("act_var", "grad_var", "weight_grad_var"):
        value = figures[name]
        assert value == float(f"{value:.3e}")  # 4 significant digits
        assert value != layer(report(), "dense_0")[name]  # and really rounded (the raw figures have more)


def test_specs_are_keyed_by_relative_forward_slash_path(monkeypatch):
    monkeypatch.chdir(ROOT)
    for shown in (str(ROOT / MNIST), "./" + MNIST, MNIST.replace("/", "\\")):
        rep = report()
        rep["spec"] = shown
        assert list(baseline.snapshot([rep])["specs"]) == [MNIST], shown
    assert baseline.spec_key(ROOT / MNIST, root=ROOT / "sample_specs") == "mnist_relu_he.yaml"


def test_non_finite_figures_are_written_as_null():
    rep = report()
    layer(rep, "dense_1")["act_var"] = math.inf
    layer(rep, "dense_1")["grad_var"] = math.nan
    text = baseline.dumps(baseline.snapshot([rep]))  # strict JSON: would raise on inf/nan
    figures = json.loads(text)["specs"][MNIST]["layers"]["dense_1"]
    assert figures["act_var"] is None and figures["grad_var"] is None


# --- comparing --------------------------------------------------------------------------------

def test_unchanged_spec_gives_no_finding():
    base = baseline.snapshot([_diagnose()])
    assert baseline.compare(_diagnose(), base) == []


def test_scaled_figure_is_a_regression_on_its_layer_with_its_factor():
    base = baseline.snapshot([report()])
    rep = report()
    old = layer(rep, "dense_1")["act_var"]
    layer(rep, "dense_1")["act_var"] = old * 3.2
    found = baseline.compare(rep, base)
    assert codes(found) == [("warning", "regression", "dense_1")]
    message = found[0]["message"]
    assert message.startswith("dense_1: activation variance moved 3.2x (")
    assert message.endswith(") since the baseline")
    # located at the spec (the layer has no finding of its own to point at)
    assert (found[0]["file"], found[0]["line"], found[0]["column"]) == (MNIST, 1, 1)


def test_gradient_variance_shrinking_is_a_regression_too():
    base = baseline.snapshot([report()])
    rep = report()
    layer(rep, "dense_0")["grad_var"] /= 10
    found = baseline.compare(rep, base)
    assert codes(found) == [("warning", "regression", "dense_0")]
    assert "gradient variance moved 10x" in found[0]["message"]


def test_another_scheme_is_detected_per_layer_and_located_at_the_layer():
    base = baseline.snapshot([report()])
    found = baseline.compare(report(init="{normal: {std: 0.5}}"), base)
    figure_moves = [f for f in found if f["message"].startswith("dense_0: activation variance")]
    assert len(figure_moves) == 1 and figure_moves[0]["severity"] == "warning"
    ratio = float(figure_moves[0]["message"].split("moved ")[1].split("x")[0])
    expected = layer(report(init="{normal: {std: 0.5}}"), "dense_0")["act_var"] / layer(report(), "dense_0")["act_var"]
    assert ratio == pytest.approx(expected, rel=0.01)
    # the new exploding-activations error is a regression, located where the report located it
    own = next(f for f in report(init="{normal: {std: 0.5}}")["findings"] if f["code"] == "exploding-activations")
    new = [f for f in found if f["message"].startswith("new finding exploding-activations on ")]
    assert len(new) == 1 and (new[0]["line"], new[0]["column"]) == (own["line"], own["column"])
    # figure regressions of a layer with findings point at that layer's line too
    flagged = [f for f in found if f["layer"] == own["layer"]]
    assert flagged and all(f["line"] > 1 for f in flagged)


def test_factor_is_configurable():
    base = baseline.snapshot([report()])
    rep = report()
    layer(rep, "dense_2")["act_var"] *= 3
    assert codes(baseline.compare(rep, base, factor=4)) == []
    assert codes(baseline.compare(rep, base)) == [("warning", "regression", "dense_2")]  # default 2x
    rep = report()
    layer(rep, "dense_2")["act_var"] *= 1.5
    assert codes(baseline.compare(rep, base)) == []
    assert codes(baseline.compare(rep, base, factor=1.2)) == [("warning", "regression", "dense_2")]
    with pytest.raises(ValueError, match="factor"):
        baseline.compare(rep, base, factor=0.5)


def test_removed_finding_is_an_improvement():
    had = report()
    had["findings"].append({"severity": "warning", "code": "dead-units", "layer": "dense_1", "message": "12% dead",
                            "hint": "", "file": MNIST, "line": 16, "column": 5})
    found = baseline.compare(report(), baseline.snapshot([had]))
    assert codes(found) == [("info", "improvement", "dense_1")]
    assert found[0]["message"] == "finding dead-units on dense_1 (warning) went away since the baseline"


def test_fixing_a_broken_init_gives_improvements():
    broken = baseline.snapshot([report(init="{normal: {std: 0.5}}")])
    found = baseline.compare(report(), broken)
    improvements = {(f["code"], f["layer"]) for f in found if f["code"] == "improvement"}
    own = next(f for f in report(init="{normal: {std: 0.5}}")["findings"] if f["code"] == "exploding-activations")
    assert ("improvement", own["layer"]) in improvements  # exploding-activations went away
    assert all(f["severity"] == "info" for f in found if f["code"] == "improvement")


def test_new_finding_is_a_regression_located_at_the_finding():
    base = baseline.snapshot([report()])
    rep = report()
    rep["findings"].append({"severity": "error", "code": "saturation", "layer": "dense_2", "message": "dense_2: 97% saturated",
                            "hint": "use smaller weights", "file": MNIST, "line": 20, "column": 5})
    found = baseline.compare(rep, base)
    assert codes(found) == [("warning", "regression", "dense_2")]
    assert found[0]["message"] == "new finding saturation on dense_2 (error): dense_2: 97% saturated"
    assert (found[0]["file"], found[0]["line"], found[0]["column"]) == (MNIST, 20, 5)
    assert found[0]["hint"] == "use smaller weights"


def test_worsened_finding_is_a_regression_and_new_infos_are_not():
    had = report()
    had["findings"].append({"severity": "warning", "code": "saturation", "layer": "dense_2", "message": "", "hint": ""})
    rep = report()
    rep["findings"].append({"severity": "error", "code": "saturation", "layer": "dense_2", "message": "", "hint": ""})
    rep["findings"].append({"severity": "info", "code": "scheme-activation-mismatch", "layer": "dense_0", "message": "", "hint": ""})
    found = baseline.compare(rep, baseline.snapshot([had]))
    assert codes(found) == [("warning", "regression", "dense_2")]
    assert "worsened from warning to error" in found[0]["message"]
    eased = baseline.compare(had, baseline.snapshot([rep]))
    assert codes(eased) == [("info", "improvement", "dense_2")] and "eased from error to warning" in eased[0]["message"]


def test_suppressed_findings_neither_regress_nor_improve():
    had = report()
    had["findings"].append({"severity": "warning", "code": "dead-units", "layer": "dense_1", "message": "", "hint": ""})
    rep = report()
    rep["findings"].append({"severity": "warning", "code": "dead-units", "layer": "dense_1", "message": "", "hint": "",
                            "suppressed": True})
    rep["findings"].append({"severity": "error", "code": "saturation", "layer": "dense_2", "message": "", "hint": "",
                            "suppressed": True})
    assert baseline.compare(rep, baseline.snapshot([had])) == []


def test_non_finite_and_near_zero_figures():
    base = baseline.snapshot([report()])
    rep = report()
    layer(rep, "dense_2")["grad_var"] = math.nan
    layer(rep, "dense_1")["act_var"] = None
    found = baseline.compare(rep, base)
    assert codes(found) == [("warning", "regression", "dense_1"), ("warning", "regression", "dense_2")]
    assert "became non-finite" in found[0]["message"] and "became non-finite" in found[1]["message"]
    # both non-finite: nothing moved; back to finite: a change all the same
    assert baseline.compare(rep, baseline.snapshot([rep])) == []
    assert codes(baseline.compare(report(), baseline.snapshot([rep]))) == [("warning", "regression", "dense_1"),
                                                                          ("warning", "regression", "dense_2")]
    # at or near 0 on both sides (below the floor): no regression; 0 -> a real figure: a regression
    zero, tiny, real = report(), report(), report()
    layer(zero, "dense_0")["grad_var"] = 0.0
    layer(tiny, "dense_0")["grad_var"] = baseline.FLOOR / 1000
    layer(real, "dense_0")["grad_var"] = 1e-12
    assert baseline.compare(tiny, baseline.snapshot([zero])) == []
    rose = baseline.compare(real, baseline.snapshot([zero]))
    assert codes(rose) == [("warning", "regression", "dense_0")] and "rose from 0 to 1e-12" in rose[0]["message"]


def test_new_spec_new_layer_and_changed_context():
    base = baseline.snapshot([report()])
    other = baseline.compare(report("sample_specs/deep_tanh_xavier.yaml"), base)
    assert codes(other) == [("info", "no-baseline", None)]
    assert other[0]["message"].startswith("new spec: no baseline yet")
    assert (other[0]["file"], other[0]["line"], other[0]["column"]) == ("sample_specs/deep_tanh_xavier.yaml", 1, 1)
    renamed = report()
    layer(renamed, "dense_2")["name"] = "logits"
    found = baseline.compare(renamed, base)
    assert codes(found) == [("info", "baseline-mismatch", None), ("info", "no-baseline", "logits")]
    assert "dense_2" in found[0]["message"]
    reseeded = baseline.compare(report(seed=1), base)
    assert ("info", "baseline-mismatch", None) in codes(reseeded)
    assert any("seed 0 \u2192 1" in f["message"] for f in reseeded)


def test_the_comparison_yields_findings_and_the_verdict_is_computed_once_from_them_all():
    """statistics -> findings -> report, one way: the baseline's regressions are findings that report.judge
    counts with the checks' when it sets the verdict; nothing rewrites a finished report's verdict."""
    from initdiag import report as reporting

    base = baseline.snapshot([report()])
    rep = report()
    layer(rep, "dense_0")["act_var"] *= 5
    rep["verdict"] = None  # as report.assemble leaves it
    everything = reporting.judge(rep, [], baseline.Reference(base))
    assert [(f.severity, f.code, f.layer, f.layer_index) for f in everything] == [("warning", "regression", "dense_0", 0)]
    assert rep["verdict"] == "warning" and rep["findings"][-1]["code"] == "regression"
    assert not hasattr(baseline, "apply")  # no second writer of the verdict


def test_a_diagnosis_against_a_baseline_has_its_regressions_among_its_findings_and_verdict():
    from initdiag import pipeline

    network_spec = spec.load(ROOT / MNIST)
    healthy = pipeline.diagnose(network_spec)
    base = baseline.snapshot([healthy.report])
    entry = base["specs"][baseline.spec_key(healthy.report["spec"])]
    first = next(iter(entry["layers"].values()))
    first["act_var"] *= 100
    judged = pipeline.diagnose(network_spec, baseline=baseline.Reference(base))
    assert healthy.report["verdict"] == "healthy"
    assert judged.report["verdict"] == "warning"
    assert any(f.code == "regression" for f in judged.findings)


# --- bad files --------------------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    (None, "no such baseline file"),
    ("{not json", "invalid JSON"),
    ('{"format": "initdiag-baseline", "format_version": 1, "specs": {"a.yaml": {"layers": {"x": {"act_var": NaN}}}}}',
     "NaN is not JSON"),
    ("[1, 2]", "not an initdiag baseline"),
    ('{"reports": []}', "not an initdiag baseline"),
    ('{"format": "initdiag-baseline", "format_version": 99, "specs": {}}', "format version 99 is not supported"),
    ('{"format": "initdiag-baseline", "format_version": 1}', '"specs": expected an object'),
    ('{"format": "initdiag-baseline", "format_version": 1, "specs": {"a.yaml": {"layers": {"x": {"act_var": "big"}}}}}',
     'layers["x"].act_var: expected a number or null'),
    ('{"format": "initdiag-baseline", "format_version": 1, "specs": {"a.yaml": {"layers": {}, "findings": [{"code": "x"}]}}}',
     "findings[0]"),
    (b"\xff\xfe\x00", "not UTF-8"),
])
def test_bad_file_raises_a_clear_baseline_error(tmp_path, content, expected):
    path = tmp_path / "baseline.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(BaselineError) as caught:
        baseline.load(path)
    assert str(caught.value).startswith(str(path)) and expected in str(caught.value)
    assert caught.value.message == str(caught.value)


def test_directory_is_not_a_baseline(tmp_path):
    with pytest.raises(BaselineError, match="directory"):
        baseline.load(tmp_path)
