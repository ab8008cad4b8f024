"""Contract tests generated from the CHECKS registry: every finding code is declared completely, suppressible,
rendered by every reporter, documented, and produced by at least one test spec. A new check (one module in
initdiag/checks/) is tested the moment it is registered; each failure names the code and the missing fact."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from initdiag import baseline, checks, pipeline, spec, yamlsource
from initdiag.checks import CHECKS, PANELS, SEVERITIES, STAGE, STAGES, Finding, FindingCode
from initdiag.checks._suppression import suppress, suppress_later
from initdiag.reporters import REPORTERS, ci_formats
from initdiag.schema import spec_schema

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_specs"
PLACEHOLDER = "See the initdiag README"  # what ci_formats._rule says for a code it has no help for


def parse(text: str, file: str = "t.yaml"):
    return spec.parse(yamlsource.loads(text, file), base_dir=".", default_name="t")


@lru_cache(maxsize=None)
def diagnose_text(text: str, seed: int = 0) -> dict:
    return pipeline.diagnose(parse(text).with_seed(seed)).report


@lru_cache(maxsize=None)
def diagnose_sample(name: str) -> dict:
    return pipeline.diagnose(spec.load(SAMPLES / f"{name}.yaml")).report


HEALTHY = "input: [16]\nlayers:\n  - {dense: 16, activation: relu, init: relu}\n  - dense: 4\n"
WIDE_RELU = "input: [16]\nlayers:\n  - {dense: 16, activation: relu, init: {normal: {std: 1}}}\n  - dense: 4\n"
OVERFLOW = ("input: [16]\ndefaults: {init: {normal: {std: 1.0e+15}}, activation: relu}\n"
            "layers:\n  - dense: 16\n  - dense: 16\n  - dense: 16\n  - dense: 4\n")
SATURATED = ("input: [64]\ndefaults: {init: {normal: {std: 1}}, activation: tanh}\n"
             "layers:\n  - dense: 64\n  - dense: 64\n  - {dense: 4, activation: identity}\n")


def _baseline_findings(now: dict, before: list) -> list:
    return baseline.compare(now, baseline.snapshot(before))


# code -> a function producing the findings (report-shaped dicts) of a small spec or command that has it.
PRODUCERS = {
    "overflow": lambda: diagnose_text(OVERFLOW)["findings"],
    "scheme-activation-mismatch": lambda: diagnose_text(OVERFLOW)["findings"],
    "edge-of-chaos": lambda: diagnose_text(HEALTHY)["findings"],
    "exploding-activations": lambda: diagnose_sample("exploding_normal")["findings"],
    "exploding-gradients": lambda: diagnose_sample("exploding_normal")["findings"],
    "vanishing-activations": lambda: diagnose_sample("zero_init")["findings"],
    "vanishing-gradients": lambda: diagnose_sample("zero_init")["findings"],
    "depth-scale": lambda: diagnose_sample("zero_init")["findings"],
    "dead-units": lambda: diagnose_sample("zero_init")["findings"],
    "symmetry": lambda: diagnose_sample("zero_init")["findings"],
    "saturation": lambda: diagnose_text(SATURATED)["findings"],
    "unused-ignore": lambda: diagnose_text(HEALTHY.replace("layers:", "ignore: [symmetry]\nlayers:"))["findings"],
    "no-baseline": lambda: _baseline_findings(diagnose_text(HEALTHY), []),
    "baseline-mismatch": lambda: _baseline_findings(diagnose_text(HEALTHY, seed=1), [diagnose_text(HEALTHY)]),
    "regression": lambda: _baseline_findings(diagnose_text(WIDE_RELU), [diagnose_text(HEALTHY)]),
    "improvement": lambda: _baseline_findings(diagnose_text(SATURATED.replace("{normal: {std: 1}}", "xavier")),
                                              [diagnose_text(SATURATED)]),
}


# ---- the contract, as helpers that say what is missing (the meta-tests below feed them incomplete entries) ----

def missing_facts(code: str) -> list[str]:
    """The declared facts of `code` that are missing or invalid."""
    entry, missing = CHECKS[code], []
    if not entry.severities or not set(entry.severities) <= set(SEVERITIES):
        missing.append(f"{code}: severities {entry.severities!r} must be a non-empty subset of {SEVERITIES}")
    for fact in ("short", "help", "flag"):
        if not str(getattr(entry, fact) or "").strip():
            missing.append(f"{code}: no {fact}")
    if entry.panel is not None and entry.panel not in PANELS:
        missing.append(f"{code}: panel {entry.panel!r} is none of {PANELS}")
    rule = next((rule for rule in checks.RULES if entry in rule.codes), None)
    if rule is None or rule.stage not in STAGES:
        missing.append(f"{code}: no rule with a stage among {STAGES}")
    elif rule.stage == "run" and rule.find is None:
        missing.append(f"{code}: produced by the run, but its check has no find function")
    return missing


def missing_suppression(code: str) -> list[str]:
    """Whether `ignore: [code]` validates, and a finding of `code` is suppressed where such findings are made."""
    text = HEALTHY.replace("layers:", f"ignore: {{codes: [{code}], reason: contract}}\nlayers:")
    problems = [str(p) for p in checks.spec_problems(parse(text))]
    if problems:
        return [f"{code}: `ignore: [{code}]` is refused: {problems}"]
    network = parse(text)
    stage = STAGE.get(code)
    if stage == "run":
        marked = suppress([Finding("warning", code, "dense_0", "m", "h", 0)], network)
        hit = [f for f in marked if f.code == code]
        ok = bool(hit) and all(f.suppressed and f.reason == "contract" for f in hit)
    elif stage == "suppression":  # an unused ignore on a layer, silenced by the spec's ignore of this code
        layered = parse(text.replace("- {dense: 16,", "- {ignore: [symmetry], dense: 16,"))
        hit = [f for f in suppress([], layered) if f.code == code]
        ok = bool(hit) and all(f.suppressed for f in hit)
    elif stage == "baseline":
        hit = suppress_later([{"severity": "info", "code": code, "layer": None, "message": "m", "hint": "h"}], network, {})
        ok = all(f.get("suppressed") and f.get("reason") == "contract" for f in hit)
    else:
        return [f"{code}: no stage, so nothing can say where it is suppressed"]
    return [] if ok else [f"{code}: a finding of it is not suppressed by `ignore: [{code}]` where it is made ({stage})"]


@lru_cache(maxsize=None)
def _report_with_every_code() -> str:
    """A real report (JSON text) with one finding of every code on its first layer, most severe severity."""
    report = json.loads(json.dumps(diagnose_text(HEALTHY)))
    report["findings"] = [{"severity": entry.severities[-1] if entry.severities else "info", "code": code,
                           "layer": "dense_0", "message": f"message of {code}", "hint": "hint", "file": "t.yaml",
                           "line": 4, "column": 5} for code, entry in CHECKS.items()]
    return json.dumps(report)


def missing_renderings(code: str) -> list[str]:
    """Every reporter and CI format names the code (or, in text, its flag); SARIF has its real help."""
    report, entry, missing = json.loads(_report_with_every_code()), CHECKS[code], []
    for name, reporter in REPORTERS.items():
        render = reporter.renderer("check")
        out = render(report, color=False, width=200) if reporter.scope == "spec" else render([report])
        if code not in out and (not entry.flag or entry.flag not in out):
            missing.append(f"{code}: the {name} format shows neither the code nor its flag")
    rules = {rule["id"]: rule for rule in json.loads(ci_formats.render_sarif([report]))["runs"][0]["tool"]["driver"]["rules"]}
    help_text = rules.get(code, {}).get("help", {}).get("text", "")
    if not help_text.strip() or help_text.startswith(PLACEHOLDER):
        missing.append(f"{code}: SARIF rule has placeholder help ({help_text!r})")
    return missing


def _readme_findings_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Findings and thresholds")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def missing_docs(code: str) -> list[str]:
    """The code in the README's findings section; each threshold of its check in that section and in the schema."""
    section, missing = _readme_findings_section(), []
    if f"`{code}`" not in section:
        missing.append(f"{code}: not in README.md's 'Findings and thresholds' section")
    rule = next((rule for rule in checks.RULES if any(entry.code == code for entry in rule.codes)), None)
    properties = spec_schema()["$defs"]["thresholds"]["properties"]
    for threshold in rule.thresholds if rule else ():
        if f"`{threshold.name}`" not in section:
            missing.append(f"{code}: threshold {threshold.name} not in README.md's 'Findings and thresholds' section")
        description = properties.get(threshold.name, {}).get("description", "")
        if not threshold.doc.strip() or threshold.doc not in description:
            missing.append(f"{code}: threshold {threshold.name} has no doc in the schema")
    return missing


def missing_producer(code: str) -> list[str]:
    produce = PRODUCERS.get(code)
    if produce is None:
        return [f"{code}: no producer in tests/test_checks_contract.py PRODUCERS (a small spec or command that makes it)"]
    findings = produce()
    found = {finding["code"] for finding in findings}
    if code not in found:
        return [f"{code}: its producer made {sorted(found)}, not {code}"]
    undeclared = {f["severity"] for f in findings if f["code"] == code} - set(CHECKS[code].severities)
    return [f"{code}: produced with severity {sorted(undeclared)}, not declared in {CHECKS[code].severities}"] if undeclared else []


# ---- generated from CHECKS ----

@pytest.mark.parametrize("code", list(CHECKS))
def test_every_code_declares_its_facts(code):
    assert not missing_facts(code), missing_facts(code)


@pytest.mark.parametrize("code", list(CHECKS))
def test_every_code_is_suppressible(code):
    assert not missing_suppression(code), missing_suppression(code)


@pytest.mark.parametrize("code", list(CHECKS))
def test_every_code_is_rendered_in_every_format(code):
    assert not missing_renderings(code), missing_renderings(code)


@pytest.mark.parametrize("code", list(CHECKS))
def test_every_code_is_documented(code):
    assert not missing_docs(code), missing_docs(code)


@pytest.mark.parametrize("code", list(CHECKS))
def test_every_code_is_produced_by_a_test_spec(code):
    assert not missing_producer(code), missing_producer(code)


def test_thresholds_type_is_derived_from_the_declarations():
    declared = [threshold for rule in checks.RULES for threshold in rule.thresholds]
    assert list(checks.Thresholds._fields) == [t.name for t in declared]
    assert checks.Thresholds() == tuple(t.default for t in declared)
    assert all(re.fullmatch(r"[a-z_]+_(warning|error)", t.name) for t in declared), "a threshold is <what>_<severity>"
    assert checks.Thresholds().override({"dead-warning": 0.3}).dead_warning == 0.3
    with pytest.raises(KeyError):
        checks.Thresholds().override({"dead_warnin": 0.3})


def test_codes_are_unique_across_modules():
    codes = [entry.code for rule in checks.RULES for entry in rule.codes]
    assert len(codes) == len(set(codes)), codes
    orders = [rule.order for rule in checks.RULES]
    assert len(orders) == len(set(orders)), f"two checks share an order: {orders}"
    runs = [rule.order if rule.run_order is None else rule.run_order for rule in checks.RULES]
    assert len(runs) == len(set(runs)), f"two checks share a place in the run: {runs}"


# ---- meta-tests: an incomplete entry is named with what it lacks ----

@pytest.fixture
def rank_collapse(monkeypatch):
    """A check registered without its help, flag or producer, as a forgetful contributor would."""
    entry = FindingCode("rank-collapse", ("warning",), "", "", "", None)
    rule = checks.Check(codes=(entry,), order=999, find=lambda run, spec, t, phase: [])
    monkeypatch.setitem(CHECKS, "rank-collapse", entry)
    monkeypatch.setitem(STAGE, "rank-collapse", "run")
    monkeypatch.setattr(checks, "RULES", checks.RULES + (rule,))
    _report_with_every_code.cache_clear()
    yield "rank-collapse"
    _report_with_every_code.cache_clear()


def test_an_incomplete_entry_is_named_with_its_missing_facts(rank_collapse):
    missing = missing_facts(rank_collapse)
    assert "rank-collapse: no help" in missing and "rank-collapse: no flag" in missing and "rank-collapse: no short" in missing


def test_a_code_without_a_producer_is_named(rank_collapse):
    assert missing_producer(rank_collapse) == [
        "rank-collapse: no producer in tests/test_checks_contract.py PRODUCERS (a small spec or command that makes it)"]


def test_a_code_without_docs_is_named(rank_collapse):
    assert missing_docs(rank_collapse) == ["rank-collapse: not in README.md's 'Findings and thresholds' section"]


def test_a_code_outside_the_derived_tables_has_placeholder_sarif_help(rank_collapse):
    # the derived tables were built at import: a code they lack renders with the placeholder, and the contract says so
    assert any("placeholder help" in problem for problem in missing_renderings(rank_collapse))


def test_a_producer_that_does_not_produce_is_named(monkeypatch):
    monkeypatch.setitem(PRODUCERS, "symmetry", lambda: diagnose_text(HEALTHY)["findings"])
    assert missing_producer("symmetry")[0].startswith("symmetry: its producer made")


def test_a_code_without_a_stage_is_not_suppressible(monkeypatch):
    monkeypatch.setitem(STAGE, "symmetry", None)
    assert missing_suppression("symmetry") == ["symmetry: no stage, so nothing can say where it is suppressed"]


# ---- the defects this registry fixed ----

def test_baseline_codes_are_suppressed_where_they_are_made(tmp_path, monkeypatch):
    """no-baseline and baseline-mismatch used to be refused by `ignore:`; regression could not be silenced."""
    from typer.testing import CliRunner

    from initdiag.cli import app

    monkeypatch.chdir(tmp_path)
    ignoring = HEALTHY.replace("layers:", "ignore: {codes: [no-baseline, baseline-mismatch], reason: new spec}\nlayers:")
    (tmp_path / "a.yaml").write_text(ignoring)
    (tmp_path / "b.yaml").write_text(HEALTHY)
    runner = CliRunner()
    assert runner.invoke(app, ["check", "b.yaml", "--save-baseline", "base.json"]).exit_code == 0

    def findings(*args):
        result = runner.invoke(app, ["check", *args, "--baseline", "base.json", "--format", "json"])
        assert result.exit_code in (0, 1), result.output
        return {f["code"]: f for f in json.loads(result.stdout)["findings"]}

    new = findings("a.yaml")["no-baseline"]
    assert new["suppressed"] is True and new["reason"] == "new spec"
    assert "suppressed" not in findings("b.yaml", "--seed", "3")["baseline-mismatch"]  # b ignores nothing
    (tmp_path / "b.yaml").write_text(ignoring)
    assert findings("b.yaml", "--seed", "3")["baseline-mismatch"]["suppressed"] is True
    assert "unused-ignore" not in findings("b.yaml")  # a baseline code cannot be called unused by the run


SPEC_STAGE = ("spec.py", "speclayers.py", "validate.py", "initspec.py", "config.py")


@pytest.mark.parametrize("module", SPEC_STAGE)
def test_the_spec_stage_does_not_import_the_checks(module):
    """The checks come later (spec -> network -> run -> checks): their names reach the spec stage as data."""
    import ast

    tree = ast.parse((ROOT / "initdiag" / module).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    assert not {name for name in imported if name == "initdiag.checks" or name.startswith("initdiag.checks.")}, module


def test_unknown_names_are_located_like_the_spec_stage_s_own_problems():
    text = ("input: [4]\nthresholds: {dead_warnin: 0.2, dead_error: -1, saturation_error: high}\n"
            "ignore: [3]\nlayers:\n  - dense: 4\n    ignore: [saturaton]\n")
    problems = [str(p) for p in checks.spec_problems(parse(text))]
    assert problems == [
        "t.yaml:2:14: thresholds.dead_warnin: unknown threshold 'dead_warnin' (did you mean 'dead_warning'?)",
        "t.yaml:2:44: thresholds.dead_error: a threshold must be >= 0, not -1.0",
        "t.yaml:2:66: thresholds.saturation_error: expected a number, not the text 'high'",
        f"t.yaml:3:10: ignore[0]: unknown finding code '3' (expected one of: {', '.join(CHECKS)})",
        "t.yaml:6:14: layers[0].ignore[0]: unknown finding code 'saturaton' (did you mean 'saturation'?)",
    ]
    with pytest.raises(yamlsource.SpecErrors):
        pipeline.diagnose(parse(text))
