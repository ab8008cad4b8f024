"""`initdiag check PATH...` as a CI gate: many specs in one run, the worst exit code, a summary."""

import json
import shutil
from pathlib import Path

import pytest

from initdiag import specfiles
from conftest import invoke

SAMPLES = Path(__file__).resolve().parent.parent / "sample_specs"


run = invoke  # the CLI in process at 80 columns without colour


@pytest.fixture
def specs(tmp_path):
    folder = tmp_path / "specs"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(SAMPLES / "mnist_relu_he.yaml", folder / "a_healthy.yaml")
    shutil.copy(SAMPLES / "deep_tanh_xavier.yaml", folder / "nested" / "b_warning.yml")
    shutil.copy(SAMPLES / "zero_init.yaml", folder / "c_failing.yaml")
    (folder / "notes.txt").write_text("not a spec")
    return folder


def test_folders_expand_to_every_yaml_below_sorted_and_excludes_apply(specs):
    files, unmatched = specfiles.expand([specs])
    assert [f.relative_to(specs).as_posix() for f in files] == ["a_healthy.yaml", "c_failing.yaml", "nested/b_warning.yml"]
    assert not unmatched
    files, _ = specfiles.expand([specs], exclude=["*failing*"])
    assert {f.name for f in files} == {"a_healthy.yaml", "b_warning.yml"}
    files, _ = specfiles.expand([f"{specs}/**/*.yml"])
    assert [f.name for f in files] == ["b_warning.yml"]


def test_exit_code_is_the_worst_across_specs(specs):
    assert run("check", specs / "a_healthy.yaml", specs / "nested").exit_code == 0
    assert run("check", specs).exit_code == 1  # one failing spec
    (specs / "d_invalid.yaml").write_text("input: [4]\nlayers: []\n")
    result = run("check", specs)
    assert result.exit_code == 2  # invalid beats failing
    assert "d_invalid.yaml:2:9: layers: expected a non-empty list" in result.stderr
    assert "verdict: healthy" in result.stdout and "verdict: failing" in result.stdout  # the others still ran
    assert "checked 4 spec(s)" in result.stdout and "1 invalid" in result.stdout


def test_json_for_many_specs(specs):
    data = json.loads(run("check", specs, "--format", "json").stdout)
    assert {"initdiag_version", "reports", "invalid", "summary"} <= set(data)
    assert [r["verdict"] for r in data["reports"]].count("healthy") == 1
    assert data["summary"] == {**data["summary"], "specs": 3, "healthy": 1, "warning": 1, "failing": 1, "invalid": 0}
    single = json.loads(run("check", specs / "a_healthy.yaml", "--format", "json").stdout)
    assert single["verdict"] == "healthy" and "reports" not in single  # one file: the one report, as before


def test_nothing_matching_is_invalid_input(specs, tmp_path):
    result = run("check", f"{tmp_path}/nowhere/*.yaml", specs / "a_healthy.yaml")
    assert result.exit_code == 2 and "no such file, folder or matching spec" in result.stderr
    assert run("check", specs, "--plot", tmp_path / "x.png").exit_code == 2


@pytest.mark.parametrize("fmt", ["junit", "sarif", "github", "gitlab", "markdown"])
def test_ci_formats_through_the_cli_parse_and_keep_the_exit_code(specs, fmt):
    import re
    import xml.etree.ElementTree as ElementTree

    (specs / "d_invalid.yaml").write_text("input: [4]\nlayers: []\n")
    result = run("check", specs, "--format", fmt)
    assert result.exit_code == 2  # the invalid spec, whatever the format
    text = result.stdout
    if fmt == "junit":
        suites = ElementTree.fromstring(text).findall("testsuite")
        assert len(suites) == 4  # three specs and the invalid one
    elif fmt in ("sarif", "gitlab"):
        data = json.loads(text)
        results = data["runs"][0]["results"] if fmt == "sarif" else data
        assert any("c_failing.yaml" in json.dumps(item) for item in results)
        assert any("d_invalid.yaml" in json.dumps(item) for item in results)
    elif fmt == "github":
        grammar = re.compile(r"^::(error|warning|notice) file=[^,]+,line=\d+,col=\d+,title=[^:]+::.*$")
        lines = text.strip().splitlines()
        assert lines and all(grammar.match(line) for line in lines)
        assert any(line.startswith("::error file=") and "c_failing.yaml,line=9" in line for line in lines)
    else:
        lines = text.splitlines()
        header = lines.index("| spec | verdict | errors | warnings | infos |")
        rows = [line for line in lines[header + 2:header + 6]]
        assert [row.split(" | ")[1] for row in rows] == ["healthy", "failing", "warning", "invalid"]


IGNORING = """\
input: [784]
ignore: [edge-of-chaos]
thresholds: {dead_warning: 0.2}
defaults: {init: zero}
layers:
  - dense: 256
    activation: relu
    ignore: {codes: [symmetry, saturation], reason: studying symmetric nets}
  - dense: 64
    activation: relu
  - dense: 10
    activation: softmax
"""


def test_suppressed_findings_are_marked_kept_and_never_counted(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(IGNORING)
    report = json.loads(run("check", path, "--format", "json").stdout)
    by_code = {(f["code"], f["layer"]): f for f in report["findings"]}
    assert by_code[("symmetry", "dense_0")]["suppressed"] and by_code[("symmetry", "dense_0")]["reason"] == "studying symmetric nets"
    assert not by_code[("symmetry", "dense_1")].get("suppressed")  # the ignore is dense_0's only
    assert by_code[("edge-of-chaos", None)]["suppressed"]  # the spec-wide ignore
    unused = by_code[("unused-ignore", "dense_0")]
    assert unused["severity"] == "warning" and "saturation" in unused["message"]
    assert report["thresholds"]["dead_warning"] == 0.2  # the spec's own threshold
    text = run("check", path).stdout
    assert "studying symmetric nets" not in text and "2 suppressed" in text
    assert "studying symmetric nets" in run("check", path, "--show-suppressed").stdout


def test_suppressing_every_failure_passes_the_gate(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [16]\ndefaults: {init: ones, activation: tanh}\nlayers:\n  - dense: 16\n    ignore: [symmetry, saturation]\n"
                    "  - {dense: 16, init: xavier}\n")
    result = run("check", path, "--format", "json")
    report = json.loads(result.stdout)
    assert [f["code"] for f in report["findings"] if f["severity"] == "error" and not f.get("suppressed")] == []
    assert result.exit_code == 0 and report["verdict"] != "failing"


def test_the_specs_own_thresholds_win_over_the_command_line(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(IGNORING)
    report = json.loads(run("check", path, "--format", "json", "--threshold", "dead_warning=0.9").stdout)
    assert report["thresholds"]["dead_warning"] == 0.2


def test_bad_ignores_and_thresholds_are_located_errors(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("input: [4]\nthresholds: {dead_warnin: 0.2}\nlayers:\n  - dense: 4\n    ignore: [saturaton]\n")
    result = run("check", path)
    assert result.exit_code == 2
    assert "2:14: thresholds.dead_warnin: unknown threshold 'dead_warnin' (did you mean 'dead_warning'?)" in result.stderr
    assert "5:14: layers[0].ignore[0]: unknown finding code 'saturaton' (did you mean 'saturation'?)" in result.stderr


def test_baselines_flag_an_injected_regression_and_not_an_unchanged_spec(specs, tmp_path, monkeypatch):
    monkeypatch.chdir(specs.parent)
    assert run("check", "specs", "--save-baseline", "base.json").exit_code == 1
    first = (specs.parent / "base.json").read_text()
    run("check", "specs", "--save-baseline", "again.json")
    assert (specs.parent / "again.json").read_text() == first  # stable: same seed, same bytes
    unchanged = json.loads(run("check", "specs", "--baseline", "base.json", "--format", "json").stdout)
    assert not [f for r in unchanged["reports"] for f in r["findings"] if f["code"] in ("regression", "improvement")]
    # inject a regression: the healthy spec's hidden layer gets a 10x larger init
    healthy = specs / "a_healthy.yaml"
    healthy.write_text(healthy.read_text().replace("init: relu          # He normal", "init: {relu: {gain: 3.2}}"))
    result = run("check", "specs/a_healthy.yaml", "--baseline", "base.json", "--format", "json")
    regressions = [f for f in json.loads(result.stdout)["findings"] if f["code"] == "regression"]
    assert regressions and regressions[0]["layer"] == "dense_0" and regressions[0]["severity"] == "warning"
    assert run("check", "specs/a_healthy.yaml", "--baseline", "missing.json").exit_code == 2


def test_configuration_files_and_their_precedence(specs, monkeypatch):
    root = specs.parent
    monkeypatch.chdir(root)
    (root / "pyproject.toml").write_text(
        '[tool.initdiag]\nfail-on = "warning"\nseed = 3\n\n[tool.initdiag.thresholds]\ndead-warning = 0.3\n\n'
        '[[tool.initdiag.overrides]]\npaths = ["specs/nested/**"]\nfail-on = "never"\n')
    report = json.loads(run("check", "specs/a_healthy.yaml", "--format", "json").stdout)
    assert report["seed"] == 3 and report["thresholds"]["dead_warning"] == 0.3  # from the file
    report = json.loads(run("check", "specs/a_healthy.yaml", "--format", "json", "--seed", "5",
                            "--threshold", "dead_warning=0.4").stdout)
    assert report["seed"] == 5 and report["thresholds"]["dead_warning"] == 0.4  # flags win
    assert run("check", "specs/nested/b_warning.yml").exit_code == 0  # the override: fail-on never
    assert run("check", "specs/nested/b_warning.yml", "--fail-on", "warning").exit_code == 1
    assert json.loads(run("check", "specs/a_healthy.yaml", "--isolated", "--format", "json").stdout)["seed"] == 0
    shown = run("config", "--show", "specs/nested/b_warning.yml").stdout
    assert "overrides[0]" in shown and "pyproject.toml" in shown
    (root / "pyproject.toml").write_text('[tool.initdiag]\nfial-on = "warning"\n')
    result = run("check", "specs/a_healthy.yaml")
    assert result.exit_code == 2 and "fial-on" in result.stderr and "did you mean 'fail-on'" in result.stderr


def test_jobs_spread_specs_across_processes_with_the_same_results(specs):
    one = json.loads(run("check", specs, "--format", "json").stdout)
    two = json.loads(run("check", specs, "--format", "json", "--jobs", "2").stdout)
    one["summary"].pop("seconds"), two["summary"].pop("seconds")
    assert one == two
    assert run("check", specs, "--jobs", "none").exit_code == 2
