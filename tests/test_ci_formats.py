"""CI reporters: every format parsed back with a real parser (XML, JSON, the workflow-command grammar)."""

from __future__ import annotations

import copy
import json
import re
from xml.etree import ElementTree as ET

import pytest

from initdiag import __version__, pipeline, spec
from initdiag.reporters import REPORTERS, ci_formats

CI_FORMATS = {name: reporter.renderer() for name, reporter in REPORTERS.items() if reporter.scope == "run"}  # the whole-run formats

SPECS = ("sample_specs/zero_init.yaml", "sample_specs/mnist_relu_he.yaml", "sample_specs/deep_tanh_xavier.yaml")
TRICKY_MESSAGE = "100% of units, a:b; 50%25 literal\nsecond line | pipe <&> \"dq\" 'sq' \r end"
TRICKY_LAYER = "la|yer,<1>:x"
TRICKY_SPEC = "dir with space/we,ird:spec%.yaml"
INVALID = [{"file": "bad.yaml", "line": 3, "column": 7, "message": "layers[0].dense: expected an int, got 'x'"},
           {"file": "bad.yaml", "line": 5, "column": 3, "message": "layers[1]: unknown key 'foo'"},
           {"file": "other\\broken.yaml", "line": None, "column": None, "message": "not a mapping: a, b"}]


@pytest.fixture(scope="module")
def real():
    return [pipeline.diagnose(spec.load(path)).report for path in SPECS]


def finding(severity, code, layer, message, line=4, column=5, **extra):
    return {"severity": severity, "code": code, "layer": layer, "message": message, "hint": "try: 1, 2 % 3",
            "file": TRICKY_SPEC, "line": line, "column": column, **extra}


def tricky_report():
    return {"spec": TRICKY_SPEC, "name": "t", "verdict": "failing",
            "layers": [{"index": 0, "name": TRICKY_LAYER, "kind": "dense"}, {"index": 1, "name": "out", "kind": "dense"}],
            "findings": [finding("error", "symmetry", TRICKY_LAYER, TRICKY_MESSAGE),
                         finding("warning", "saturation", "out", "out: 12.5% saturated", line=8),
                         finding("info", "edge-of-chaos", None, "chaotic: mean chi = 3.1", line=1, column=1),
                         finding("error", "symmetry", "out", "out: 90% duplicate", line=8)]}


def suppressed_report():
    report = tricky_report()
    report["findings"].append(finding("error", "dead-units", "out", "SUPPRESSED-ONE", line=8, suppressed=True))
    return report


def test_sample_reports_have_the_expected_verdicts(real):
    assert [report["verdict"] for report in real] == ["failing", "healthy", "warning"]


# ---- JUnit ----------------------------------------------------------------------------------------

def test_junit_counts_and_attributes(real):
    root = ET.fromstring(ci_formats.render_junit(real, INVALID))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == len(real) + 2  # bad.yaml and other/broken.yaml, each one suite
    for suite, report in zip(suites, real):
        assert suite.get("name") == report["spec"]
        cases = suite.findall("testcase")
        assert [case.get("name") for case in cases] == [layer["name"] for layer in report["layers"]] + [report["spec"]]
        assert all(case.get("classname") == report["spec"] for case in cases)
        failing = [f for f in report["findings"] if f["severity"] in ("error", "warning")]
        failures = suite.findall("testcase/failure")
        assert len(failures) == len(failing)
        assert sorted(f.get("type") for f in failures) == sorted(f["code"] for f in failing)
        assert all(f.get("message") and f.text for f in failures)
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(case.find("failure") is not None for case in cases)
        assert suite.get("errors") == "0"
    # zero_init: its hidden layer fails (the output layer's units are told apart by the loss, not symmetric)
    assert int(suites[0].get("failures")) == 1 and suites[1].get("failures") == "0"
    bad = suites[len(real)]
    assert bad.get("name") == "bad.yaml" and bad.get("errors") == "1" and bad.get("tests") == "1"
    error = bad.find("testcase/error")
    assert error.get("type") == "invalid-spec" and "bad.yaml:3:7" in error.text and "bad.yaml:5:3" in error.text
    assert suites[-1].get("name") == "other/broken.yaml"
    for key in ("tests", "failures", "errors"):
        assert int(root.get(key)) == sum(int(suite.get(key)) for suite in suites)


def test_junit_escapes_tricky_text_and_places_network_findings():
    text = ci_formats.render_junit([tricky_report()])
    root = ET.fromstring(text)
    suite = root.find("testsuite")
    assert suite.get("name") == TRICKY_SPEC
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert set(cases) == {TRICKY_LAYER, "out", TRICKY_SPEC}
    failure = cases[TRICKY_LAYER].find("failure")
    assert failure.get("message") == TRICKY_MESSAGE
    assert TRICKY_MESSAGE.split("\n")[0] in failure.text and "try: 1, 2 % 3" in failure.text
    assert len(cases["out"].findall("failure")) == 2
    assert cases[TRICKY_SPEC].find("failure") is None
    assert "edge-of-chaos" in cases[TRICKY_SPEC].find("system-out").text
    assert suite.get("failures") == "2" and suite.get("tests") == "3"


def test_junit_survives_control_characters():
    report = tricky_report()
    report["findings"][0]["message"] = "bell\x07 and nul\x00"
    ET.fromstring(ci_formats.render_junit([report]))  # raises on an XML-illegal character


# ---- SARIF ----------------------------------------------------------------------------------------

def check_sarif_structure(log: dict):
    """Required properties and constraints of SARIF 2.1.0 (sarif-schema-2.1.0.json), by hand."""
    assert {"version", "runs"} <= set(log) and log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    assert "tool" in run and "driver" in run["tool"]  # run requires tool, tool requires driver
    driver = run["tool"]["driver"]
    assert driver["name"] == "initdiag" and driver["version"] == __version__  # toolComponent requires name
    assert re.match(r"^https?://", driver["informationUri"])
    rules = driver["rules"]
    ids = [rule["id"] for rule in rules]  # reportingDescriptor requires id
    assert len(ids) == len(set(ids))
    for rule in rules:
        assert rule["name"] and " " not in rule["name"]
        for key in ("shortDescription", "fullDescription", "help"):
            assert isinstance(rule[key]["text"], str) and rule[key]["text"]  # multiformatMessageString requires text
    for result in run["results"]:
        assert "message" in result and result["message"]["text"]  # result requires message; message text or id
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("none", "note", "warning", "error")
        assert result["locations"]
        for location in result["locations"]:
            physical = location["physicalLocation"]
            assert "artifactLocation" in physical or "address" in physical
            uri = physical["artifactLocation"]["uri"]
            assert "\\" not in uri and not uri.startswith("/") and not re.match(r"^[a-z]+:", uri)
            region = physical["region"]
            assert isinstance(region["startLine"], int) and region["startLine"] >= 1
            assert isinstance(region["startColumn"], int) and region["startColumn"] >= 1
        for suppression in result.get("suppressions", ()):
            assert suppression["kind"] in ("inSource", "external")  # suppression requires kind
    return run


def test_sarif_structure_and_results(real):
    run = check_sarif_structure(json.loads(ci_formats.render_sarif(real, INVALID)))
    rule_ids = {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    assert set(ci_formats.RULES) <= rule_ids and "invalid-spec" in rule_ids
    assert {"exploding-activations", "vanishing-activations", "exploding-gradients", "vanishing-gradients", "saturation",
            "dead-units", "symmetry", "overflow", "scheme-activation-mismatch", "edge-of-chaos"} <= rule_ids
    findings = [f for report in real for f in report["findings"]]
    results = run["results"]
    assert len(results) == len(findings) + len(INVALID)
    level = {"error": "error", "warning": "warning", "info": "note"}
    for result, f in zip(results, findings):
        assert result["ruleId"] == f["code"] and result["level"] == level[f["severity"]]
        assert result["message"]["text"].startswith(f["message"])
        physical = result["locations"][0]["physicalLocation"]
        assert physical["artifactLocation"]["uri"] == f["file"]
        assert physical["region"] == {"startLine": f["line"], "startColumn": f["column"]}
    invalid = results[len(findings):]
    assert [r["ruleId"] for r in invalid] == ["invalid-spec"] * 3 and all(r["level"] == "error" for r in invalid)
    assert invalid[2]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "other/broken.yaml"
    assert invalid[2]["locations"][0]["physicalLocation"]["region"] == {"startLine": 1, "startColumn": 1}


def test_sarif_tricky_text_round_trips():
    run = check_sarif_structure(json.loads(ci_formats.render_sarif([tricky_report()])))
    first = run["results"][0]
    assert first["message"]["text"] == TRICKY_MESSAGE + "\nhint: try: 1, 2 % 3"
    assert first["properties"]["layer"] == TRICKY_LAYER
    uri = first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert " " not in uri and "%" in uri  # percent-encoded, a valid URI reference
    from urllib.parse import unquote
    assert unquote(uri) == TRICKY_SPEC


def test_sarif_unknown_code_gets_a_rule():
    report = tricky_report()
    report["findings"][0]["code"] = "brand-new-check"
    run = check_sarif_structure(json.loads(ci_formats.render_sarif([report])))
    assert run["tool"]["driver"]["rules"][run["results"][0]["ruleIndex"]]["id"] == "brand-new-check"


# ---- GitHub Actions -------------------------------------------------------------------------------

DATA = r"(?:[^%\r\n]|%25|%0D|%0A)*"
VALUE = r"(?:[^%\r\n:,]|%25|%0D|%0A|%3A|%2C)*"
COMMAND = re.compile(rf"^::(?P<cmd>error|warning|notice) (?P<props>[a-zA-Z]+={VALUE}(?:,[a-zA-Z]+={VALUE})*)::(?P<msg>{DATA})$")


def decode(text: str) -> str:
    return re.sub(r"%(25|0D|0A|3A|2C)", lambda m: {"25": "%", "0D": "\r", "0A": "\n", "3A": ":", "2C": ","}[m.group(1)], text)


def parse_github(text: str) -> list[dict]:
    assert text.endswith("\n") or text == ""
    commands = []
    for line in text.splitlines():
        match = COMMAND.match(line)
        assert match, line
        props = dict(item.split("=", 1) for item in match["props"].split(","))
        commands.append({"cmd": match["cmd"], "msg": decode(match["msg"]),
                         **{key: decode(value) for key, value in props.items()}})
    return commands


def test_github_every_line_parses(real):
    commands = parse_github(ci_formats.render_github(real, INVALID))
    findings = [f for report in real for f in report["findings"]]
    assert len(commands) == len(findings) + len(INVALID)
    kind = {"error": "error", "warning": "warning", "info": "notice"}
    for command, f in zip(commands, findings):
        assert command["cmd"] == kind[f["severity"]]
        assert command["file"] == f["file"] and command["line"] == str(f["line"]) and command["col"] == str(f["column"])
        assert command["title"].startswith(f"initdiag {f['code']}") and (f["layer"] is None or f["layer"] in command["title"])
        assert command["msg"] == f"{f['message']}\nhint: {f['hint']}"
    assert [c["cmd"] for c in commands[len(findings):]] == ["error"] * 3
    assert commands[-1]["file"] == "other/broken.yaml" and commands[-1]["msg"] == "not a mapping: a, b"


def test_github_escapes_round_trip():
    text = ci_formats.render_github([tricky_report()])
    assert "\r" not in text.replace("\n", "") and text.count("\n") == 4
    first = parse_github(text)[0]
    assert first["msg"] == TRICKY_MESSAGE + "\nhint: try: 1, 2 % 3"
    assert first["file"] == TRICKY_SPEC and first["title"] == f"initdiag symmetry ({TRICKY_LAYER})"
    assert "%2C" in text.splitlines()[0].split("::")[1] and "50%2525" in text


# ---- GitLab Code Quality --------------------------------------------------------------------------

def test_gitlab_structure_and_severities(real):
    issues = json.loads(ci_formats.render_gitlab(real, INVALID))
    findings = [f for report in real for f in report["findings"]]
    assert isinstance(issues, list) and len(issues) == len(findings) + len(INVALID)
    severity = {"info": "info", "warning": "minor", "error": "major"}
    for issue, f in zip(issues, findings):
        assert {"description", "check_name", "fingerprint", "severity", "location"} <= set(issue)
        assert issue["check_name"] == f["code"] and issue["severity"] == severity[f["severity"]]
        assert issue["location"] == {"path": f["file"], "lines": {"begin": f["line"]}}
        assert re.fullmatch(r"[0-9a-f]{64}", issue["fingerprint"])
    assert {i["severity"] for i in issues[len(findings):]} == {"blocker"}
    prints = [issue["fingerprint"] for issue in issues]
    assert len(prints) == len(set(prints))


def test_gitlab_fingerprints_are_stable_and_message_independent(real):
    again = [pipeline.diagnose(spec.load(path)).report for path in SPECS]
    first = [i["fingerprint"] for i in json.loads(ci_formats.render_gitlab(real))]
    assert first == [i["fingerprint"] for i in json.loads(ci_formats.render_gitlab(again))]
    changed = copy.deepcopy(real)
    for report in changed:
        for f in report["findings"]:
            f["message"] = re.sub(r"\d+(\.\d+)?", "42.5", f["message"])
    assert first == [i["fingerprint"] for i in json.loads(ci_formats.render_gitlab(changed))]
    moved = copy.deepcopy(real)
    moved[0]["spec"] = "elsewhere.yaml"
    for f in moved[0]["findings"]:
        f["file"] = "elsewhere.yaml"
    assert set(first).isdisjoint(i["fingerprint"] for i in json.loads(ci_formats.render_gitlab(moved))[:len(real[0]["findings"])])
    invalid = json.loads(ci_formats.render_gitlab([], [dict(INVALID[0], line=99, message="layers[17].dense: expected an int, got 'x'")]))
    assert invalid[0]["fingerprint"] == json.loads(ci_formats.render_gitlab([], INVALID[:1]))[0]["fingerprint"]


def test_gitlab_same_code_same_layer_stays_unique():
    report = tricky_report()
    report["findings"].append(finding("error", "symmetry", "out", "out: 12% duplicate again", line=8))
    prints = [i["fingerprint"] for i in json.loads(ci_formats.render_gitlab([report]))]
    assert len(prints) == len(set(prints)) == 5
    assert json.loads(ci_formats.render_gitlab([report]))[0]["description"] == TRICKY_MESSAGE


# ---- Markdown -------------------------------------------------------------------------------------

def table_rows(text: str) -> list[list[str]]:
    """Cells of every table row, split on unescaped pipes (the separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(?:-+:?\|)+", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_markdown_tables(real):
    text = ci_formats.render_markdown(real, INVALID)
    assert text.startswith("## ") and not re.search("[\u2600-\u27bf\U0001F300-\U0001FAFF]", text)
    rows = table_rows(text)
    with_findings = [report for report in real if report["findings"]]
    headers = 1 + len(with_findings) + 1  # summary, one per spec with findings, invalid specs
    expected = len(real) + 2 + sum(len(r["findings"]) for r in with_findings) + len(INVALID)
    assert len(rows) == headers + expected
    assert rows[0] == ["spec", "verdict", "errors", "warnings", "infos"]
    zero = rows[1]
    assert zero[1] == "failing"
    assert [int(n) for n in zero[2:]] == [sum(f["severity"] == s for f in real[0]["findings"]) for s in ("error", "warning", "info")]
    assert [row[1] for row in rows[1:6]] == [r["verdict"] for r in real] + ["invalid", "invalid"] and rows[6][0] == "severity"
    assert all(len(row) == len(rows[0]) or len(row) == 4 for row in rows)


def test_markdown_escapes_cells():
    text = ci_formats.render_markdown([tricky_report()])
    rows = table_rows(text)
    assert all(len(row) in (4, 5) for row in rows) and len(rows) == 2 + 1 + 4
    assert len(text.splitlines()) == len(rows) + 2 + 5  # separators, heading, 2 blanks, spec heading, blank: no cell spilled
    assert "<&>" not in text and "\\<\\&\\>" in text and "<br>" in text


# ---- suppressed findings --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CI_FORMATS))
def test_suppressed_findings_left_out_by_default_and_marked_on_request(name):
    render = CI_FORMATS[name]
    assert "SUPPRESSED-ONE" not in render([suppressed_report()])
    assert render([suppressed_report()]) == render([tricky_report()])
    shown = render([suppressed_report()], suppressed=True)
    assert "SUPPRESSED-ONE" in shown and "suppress" in shown.lower()
    if name == "junit":
        assert ET.fromstring(shown).find("testsuite").get("failures") == "2"
    if name == "sarif":
        result = json.loads(shown)["runs"][0]["results"][-1]
        assert result["suppressions"] == [{"kind": "external"}]
    if name == "github":
        assert parse_github(shown)[-1]["cmd"] == "notice"
    if name == "gitlab":
        assert json.loads(shown)[-1]["severity"] == "info"


def test_empty_input_renders_valid_documents():
    assert ET.fromstring(ci_formats.render_junit([])).get("tests") == "0"
    assert json.loads(ci_formats.render_sarif([]))["runs"][0]["results"] == []
    assert ci_formats.render_github([]) == "" and json.loads(ci_formats.render_gitlab([])) == []
    assert len(table_rows(ci_formats.render_markdown([]))) == 1
