"""Contract tests generated from the REPORTERS registry (initdiag.reporters): every declared format is checked
for every fact, the moment its module declares it. A failure names the format and the fact it lacks.

Per format: its declaration is complete (name, scope, commands, a render function per command, description);
it is among the --format choices of exactly the commands it serves and among the configuration's valid formats
(check's); it renders an empty run, a healthy report, a report with findings of every severity, and every
finding code known (`known_finding_codes`, the one place to switch to the checks' registry)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import pytest

from initdiag import config, reporters
from initdiag.reporters import COMMANDS, REPORTERS, Reporter, missing_facts

SAMPLES = Path(__file__).resolve().parent.parent / "sample_specs"
SEVERITIES = ("info", "warning", "error")
RENDER_OPTIONS = {"color": False, "width": 80, "theory": False, "suppressed": True}


def known_finding_codes() -> tuple:
    """Every finding code a report may carry: the codes the checks registry declares."""
    from initdiag.checks import CHECKS

    return tuple(CHECKS)


# --------------------------------------------------------------------------- the contract, as one helper


def cli_choices(command: str) -> tuple:
    """The --format choices `initdiag COMMAND --help` offers."""
    import typer.main

    from initdiag.cli import app

    group = typer.main.get_command(app)
    option = next(param for param in group.commands[command].params if "--format" in param.opts)
    return tuple(option.type.choices)


def contract_problems(name: str) -> list[str]:
    """Everything the registry's entry `name` lacks, as messages that name the format and the fact."""
    reporter = reporters.REPORTERS[name]
    problems = [f"format {name!r}: {problem}" for problem in missing_facts(reporter)]
    if problems:
        return problems
    for command in COMMANDS:
        offered = name in cli_choices(command)
        if offered != (command in reporter.commands):
            problems.append(f"format {name!r}: {'missing from' if not offered else 'offered by'} `{command} --format`"
                            f" although it {'serves' if not offered else 'does not serve'} {command}")
    if ("check" in reporter.commands) != (name in config.formats()):
        problems.append(f"format {name!r}: the configuration's valid formats disagree with its commands")
    return problems


# --------------------------------------------------------------------------- data to render


@lru_cache(maxsize=None)
def _healthy_text() -> str:
    from initdiag import pipeline, spec

    return json.dumps(pipeline.diagnose(spec.load(SAMPLES / "mnist_relu_he.yaml")).report)


def healthy_report() -> dict:
    report = json.loads(_healthy_text())
    report["findings"] = []
    report["verdict"] = "healthy"
    return report


def finding(severity: str, code: str, report: dict, suppressed: bool = False) -> dict:
    data = {"severity": severity, "code": code, "layer": report["layers"][0]["name"], "message": f"{code} message",
            "hint": f"{code} hint", "file": report["spec"], "line": 3, "column": 5}
    if suppressed:
        data.update(suppressed=True, reason="known")
    return data


def report_with(findings: list, verdict: str) -> dict:
    report = healthy_report()
    report["findings"] = [finding(severity, code, report, suppressed) for severity, code, suppressed in findings]
    report["verdict"] = verdict
    return report


def every_severity() -> dict:
    return report_with([("error", "overflow", False), ("warning", "dead-units", False),
                        ("info", "edge-of-chaos", False), ("error", "symmetry", True)], "failing")


def every_code() -> dict:
    return report_with([("warning", code, False) for code in known_finding_codes()], "warning")


@lru_cache(maxsize=None)
def _command_results() -> str:
    from initdiag import compare, initspec, recommend, spec

    net = spec.load(SAMPLES / "mnist_relu_he.yaml")
    inits = [initspec.parse(name, "t") for name in ("relu", "xavier")]
    compared = compare.build(net, compare.run_all(net, inits, False, None))
    return json.dumps({"compare": compared, "recommend": recommend.recommend(net)})


def render_check(reporter: Reporter, reports: list) -> str:
    """What `check` does with a run's reports: a run-scope format takes them all, a spec-scope one each."""
    render = reporter.renderer("check")
    if reporter.scope == "run":
        return render(reports, [], True)
    return "".join(render(report, **RENDER_OPTIONS) for report in reports)


# --------------------------------------------------------------------------- the generated tests


@pytest.mark.parametrize("name", list(REPORTERS))
def test_every_reporter_declares_every_fact_and_is_offered_where_it_serves(name):
    assert contract_problems(name) == []


@pytest.mark.parametrize("name", [name for name, reporter in REPORTERS.items() if reporter.scope == "run"])
def test_a_run_format_renders_an_empty_run(name):
    text = REPORTERS[name].renderer("check")([], [], False)  # may be empty: GitHub annotations have nothing to say
    assert isinstance(text, str), f"format {name!r}: an empty run did not render to text"


@pytest.mark.parametrize("name", [name for name, reporter in REPORTERS.items() if "check" in reporter.commands])
@pytest.mark.parametrize("case", ["healthy", "every severity"])
def test_a_check_format_renders_reports(name, case):
    report = healthy_report() if case == "healthy" else every_severity()
    text = render_check(REPORTERS[name], [report])
    assert isinstance(text, str), f"format {name!r}: a {case} report did not render to text"
    for f in report["findings"]:
        assert f["message"] in text, f"format {name!r}: the {f['severity']} finding {f['code']!r} is not rendered"


@pytest.mark.parametrize("name", [name for name, reporter in REPORTERS.items() if "check" in reporter.commands])
@pytest.mark.parametrize("code", known_finding_codes())
def test_a_check_format_renders_every_finding_code(name, code):
    report = every_code()
    text = render_check(REPORTERS[name], [report])
    assert f"{code} message" in text, f"format {name!r} does not render a finding with code {code!r}"


@pytest.mark.parametrize("name, command", [(name, command) for name, reporter in REPORTERS.items()
                                           for command in reporter.commands if command != "check"])
def test_a_format_renders_the_results_of_the_commands_it_serves(name, command):
    result = json.loads(_command_results())[command]
    text = REPORTERS[name].renderer(command)(copy.deepcopy(result), color=False, width=80)
    assert isinstance(text, str) and text, f"format {name!r}: nothing rendered for {command}"


# --------------------------------------------------------------------------- meta-tests: the contract can fail


@pytest.mark.parametrize("broken, fact", [
    ({"scope": None}, "scope"),
    ({"renders": {}}, "render for check"),
    ({"renders": {"check": "initdiag.reporters.json_format:no_such_render"}}, "render for check"),
    ({"commands": ()}, "commands"),
    ({"commands": ("check", "export")}, "commands"),
    ({"description": ""}, "description"),
])
def test_an_incomplete_reporter_is_named_with_the_fact_it_lacks(monkeypatch, broken, fact):
    complete = {"name": "csv", "scope": "run", "commands": ("check",),
                "renders": {"check": "initdiag.reporters.json_format:render"}, "description": "comma-separated"}
    monkeypatch.setitem(REPORTERS, "csv", Reporter(**{**complete, **broken}))
    problems = contract_problems("csv")
    assert any(problem.startswith("format 'csv': " + fact) for problem in problems), problems


def test_a_complete_reporter_missing_from_the_cli_is_named(monkeypatch):
    """Registered after the CLI built its choices (as a stale, hand-kept list would be): the contract names it."""
    monkeypatch.setitem(REPORTERS, "csv", Reporter("csv", "run", ("check",),
                                                   {"check": "initdiag.reporters.json_format:render"}, "comma-separated"))
    assert "format 'csv': missing from `check --format` although it serves check" in contract_problems("csv")


def test_discovery_finds_a_new_declaring_module(monkeypatch, tmp_path):
    """Adding a format is one module: a *_format.py in the package that declares REPORTERS."""
    (tmp_path / "csv_format.py").write_text(
        "from initdiag.reporters import Reporter\n"
        "REPORTERS = (Reporter('csv', 'run', ('check',), {'check': 'csv_format:render'}, 'comma-separated'),)\n"
        "def render(reports, invalid=(), suppressed=False):\n    return 'spec,verdict\\n'\n", encoding="utf-8")
    monkeypatch.setattr(reporters, "__path__", [*reporters.__path__, str(tmp_path)])
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    monkeypatch.setitem(sys.modules, "initdiag.reporters.csv_format", __import__("csv_format"))
    found = reporters._discover()
    assert "csv" in found and missing_facts(found["csv"]) == []


def test_json_and_the_ci_formats_never_load_rich():
    import subprocess
    import sys

    names = [name for name in REPORTERS if name != "text"]
    code = ("import sys; from initdiag.reporters import REPORTERS\n"
            f"for name in {names!r}:\n"
            "    REPORTERS[name].renderer('check')\n"
            "print('rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.stdout.strip() == "False"


def test_a_format_the_registry_lacks_in_the_configuration_is_a_located_error(tmp_path, monkeypatch):
    """The CLI's choices and the configuration's came from two lists; when they drifted, an uncaught ConfigError
    traceback. Both come from REPORTERS now, and a bad `format =` is exit 2 naming the file and the key."""
    from typer.testing import CliRunner

    from initdiag.cli import app

    (tmp_path / "initdiag.toml").write_text('format = "csv"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["check", str(SAMPLES / "mnist_relu_he.yaml")])
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, config.ConfigError)
    assert "initdiag.toml: format: 'csv' is not valid (expected one of: " in result.output
    assert "Traceback" not in result.output
