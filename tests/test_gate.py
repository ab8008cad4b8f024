"""`initdiag check PATH...` as a CI gate: many specs in one run, the worst exit code, a summary."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from initdiag import specfiles
from initdiag.cli import app

RUNNER = CliRunner()
SAMPLES = Path(__file__).resolve().parent.parent / "sample_specs"


def run(*args):
    result = RUNNER.invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


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
