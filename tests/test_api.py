"""The Python API (initdiag.api): `initdiag.check` is `initdiag check` for a path, a YAML text or a dict, its
Report's to_dict() is the JSON report, and every invalid input is one SpecError with located problems."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

import initdiag
from conftest import invoke, write_spec

ROOT = Path(__file__).resolve().parent.parent
MNIST = "sample_specs/mnist_relu_he.yaml"  # healthy
EXPLODING = "sample_specs/exploding_normal.yaml"  # failing
SMALL_TANH = "sample_specs/small_batch_tanh.yaml"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the samples' paths as the CLI is given them


def cli_json(*args) -> tuple[dict, int]:
    result = invoke("check", *args, "--format", "json", "--isolated")
    return json.loads(result.stdout), result.exit_code


def located(report: dict) -> dict:
    """The report without where its spec came from (a file's name, '<text>', '<dict>')."""
    data = dict(report, spec=None)
    data["findings"] = [dict(finding, file=None) for finding in data["findings"]]
    return data


# --- the same check as the command line -----------------------------------------------------------------

@pytest.mark.parametrize("path", [MNIST, EXPLODING, SMALL_TANH])
def test_to_dict_is_the_cli_json_report(path):
    expected, exit_code = cli_json(path)
    report = initdiag.check(path)
    assert report.to_dict() == expected
    assert json.loads(report.to_json()) == expected
    assert report.verdict == expected["verdict"]
    assert report.exit_code == exit_code


def test_exit_code_is_the_cli_s_for_a_healthy_and_a_failing_spec():
    assert initdiag.check(MNIST).exit_code == cli_json(MNIST)[1] == 0
    assert initdiag.check(EXPLODING).exit_code == cli_json(EXPLODING)[1] == 1


def test_scheme_and_seed_are_the_cli_s_flags():
    expected, _ = cli_json(MNIST, "--scheme", "{normal: {std: 0.01}}", "--seed", "7")
    report = initdiag.check(MNIST, scheme={"normal": {"std": 0.01}}, seed=7)
    assert report.to_dict() == expected
    assert expected["scheme"] == "normal(std=0.01)" and expected["seed"] == 7
    named, _ = cli_json(MNIST, "--scheme", "xavier")
    assert initdiag.check(MNIST, scheme="xavier").to_dict() == named


def test_thresholds_are_the_cli_s_threshold_flags():
    expected, _ = cli_json(SMALL_TANH, "--threshold", "dead_warning=0.5")
    assert initdiag.check(SMALL_TANH, thresholds={"dead_warning": 0.5}).to_dict() == expected


def test_a_path_a_text_and_a_dict_give_the_same_report():
    text = (ROOT / MNIST).read_text(encoding="utf-8")
    by_path = initdiag.check(Path(MNIST))
    by_str = initdiag.check(MNIST)
    by_text = initdiag.check(text)
    by_dict = initdiag.check(yaml.safe_load(text))
    assert by_path.to_dict() == by_str.to_dict()
    assert located(by_text.to_dict()) == located(by_dict.to_dict()) == located(by_path.to_dict())
    assert by_text.to_dict()["spec"] == "<text>" and by_dict.to_dict()["spec"] == "<dict>"


def test_batch_replaces_the_spec_s():
    assert initdiag.check(MNIST, batch=32).to_dict()["batch"] == 32


# --- Report ------------------------------------------------------------------------------------------------

def test_report_holds_verdict_findings_and_layers():
    report = initdiag.check(EXPLODING)
    data = report.to_dict()
    assert report.verdict == "failing"
    assert [(f.severity, f.code, f.layer, f.message, f.hint) for f in report.findings] == [
        (f["severity"], f["code"], f["layer"], f["message"], f["hint"]) for f in data["findings"]]
    assert report.layers == tuple(data["layers"])
    assert report.name == data["name"]
    summary = repr(report)
    assert summary.startswith("<initdiag.Report 'exploding-normal': failing, 10 layers, ") and "error" in summary
    assert "\n" not in summary


def test_report_is_read_only_and_to_dict_a_copy():
    report = initdiag.check(MNIST)
    with pytest.raises(AttributeError):
        report.verdict = "healthy"
    data = report.to_dict()
    data["layers"][0]["name"] = "changed"
    report.layers[0]["name"] = "changed too"
    assert report.to_dict()["layers"][0]["name"] == "dense_0"


def test_a_report_pickles():
    import pickle

    report = initdiag.check(MNIST)
    assert pickle.loads(pickle.dumps(report)) == report


def test_repr_html_escapes_a_layer_name():
    spec = textwrap.dedent("""
        input: [8]
        batch: 16
        layers:
          - dense: 8
            name: "<script>alert(1)</script>"
            activation: relu
          - dense: 2
        """)
    report = initdiag.check(spec)
    page = report._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f"</b>: {report.verdict}</p>" in page and page.count("<tr>") == 1 + len(report.layers)


def test_to_frame_without_pandas_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        initdiag.check(MNIST).to_frame()


def test_to_frame_gives_one_row_per_layer(monkeypatch):
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda rows, columns: ("frame", rows, columns)
    monkeypatch.setitem(sys.modules, "pandas", fake)
    report = initdiag.check(MNIST)
    _, rows, columns = report.to_frame()
    assert rows == list(report.layers) and columns == list(report.layers[0])


def test_to_frame_with_pandas():
    pandas = pytest.importorskip("pandas")
    report = initdiag.check(MNIST)
    frame = report.to_frame()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame["name"]) == [layer["name"] for layer in report.layers]


# --- invalid input: one SpecError, located -------------------------------------------------------------

def test_a_bad_spec_file_raises_spec_error_with_the_cli_s_lines(tmp_path):
    path = write_spec(tmp_path, """
        input: [8]
        layers:
          - dense: -3
          - dense: 2
            activation: relu6x
        """)
    with pytest.raises(initdiag.SpecError) as caught:
        initdiag.check(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert [problem.location.line for problem in error.problems] == [3, 5]
    assert all(problem.file == str(path) and problem.path and problem.message for problem in error.problems)
    result = invoke("check", path)
    assert result.exit_code == 2
    assert str(error).splitlines() == result.stderr.strip().splitlines()


def test_a_dict_with_a_wrong_type_is_located():
    with pytest.raises(initdiag.SpecError) as caught:
        initdiag.check({"input": [8], "batch": "many", "layers": [{"dense": 2}]})
    (problem,) = caught.value.problems
    assert problem.file == "<dict>" and problem.path == "batch" and problem.location.line == 5
    assert str(caught.value).startswith("<dict>:5:")


@pytest.mark.parametrize("source", [
    "input: [8]\nlayers: [{dense: 2}\n",  # malformed YAML
    "",  # empty
    "just words",  # not a mapping
    "sample_specs/no_such_spec.yaml",  # a missing file
    {"input": [8], "layers": [{"dense": 2, "init": {"normal": {"std": "wide"}}}]},
    {"input": [8], "layers": [{"dense": 2}], "thresholds": {"dead_warnin": 0.1}},
    {"input": [8], "layers": [{"dense": 2}], "seed": {1, 2}},  # not JSON-like data
])
def test_every_invalid_input_is_a_spec_error(source):
    with pytest.raises(initdiag.SpecError) as caught:
        initdiag.check(source)
    assert caught.value.problems and str(caught.value)


@pytest.mark.parametrize("arguments, fragment", [
    ({"scheme": "xavierr"}, "xavier"),
    ({"scheme": {"normal": {"std": -1}}}, "std"),
    ({"thresholds": {"dead_warnin": 0.2}}, "did you mean 'dead_warning'"),
    ({"thresholds": {"dead_warning": -1}}, ">= 0"),
    ({"max_memory": "lots"}, "max_memory"),
    ({"max_memory": 1000}, "memory"),  # a refusal: the run would need more
])
def test_bad_arguments_are_spec_errors(arguments, fragment):
    with pytest.raises(initdiag.SpecError, match=fragment):
        initdiag.check(MNIST, **arguments)


def test_a_spec_error_pickles():
    import pickle

    with pytest.raises(initdiag.SpecError) as caught:
        initdiag.check({"input": [8], "batch": "many", "layers": [{"dense": 2}]})
    again = pickle.loads(pickle.dumps(caught.value))
    assert str(again) == str(caught.value) and len(again.problems) == 1


# --- a light import ----------------------------------------------------------------------------------------

def test_import_initdiag_is_light():
    code = ("import sys, initdiag; heavy = ('numpy', 'matplotlib', 'torch', 'initdiag.pipeline', 'initdiag.api'); "
            "print([m for m in sys.modules if m.split('.')[0] in heavy or m in heavy]); "
            "initdiag.SpecError; initdiag.check; "
            "print([m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'torch')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines() == ["[]", "[]"]


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'check_modules'"):
        initdiag.check_modules  # noqa: B018


def test_the_package_is_typed():
    assert (ROOT / "initdiag" / "py.typed").is_file()
    assert 'initdiag = ["py.typed"]' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
