"""Reporters for CI systems: JUnit XML, SARIF 2.1.0, GitHub Actions commands, GitLab Code Quality, Markdown.

Each is `render(reports, invalid=(), suppressed=False) -> str` over a LIST of check reports (report.build,
one per spec) and the specs that failed validation ({"file", "line", "column", "message"}). They only
format: verdicts and counts come from the reports. Findings marked `"suppressed": true` are left out
unless `suppressed=True`, which includes them, marked as suppressed and never counted as failures.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from initdiag import __version__
from initdiag.checks import CHECKS
from initdiag.reporters import Reporter

INFORMATION_URI = "https://pypi.org/project/initdiag/"
INVALID = "invalid-spec"
# code -> (short description, help): every declared finding code, and the reporters' own for invalid specs
RULES = {code: (entry.short, entry.help) for code, entry in CHECKS.items()}
RULES[INVALID] = ("The spec failed validation",
                  "Fix the spec at the reported line; `initdiag check SPEC` prints every problem found.")
SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
GITHUB_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}
GITLAB_SEVERITY = {"error": "major", "warning": "minor", "info": "info", INVALID: "blocker"}


# ---- shared helpers ---------------------------------------------------------------------------------

def _path(path) -> str:
    """A spec path as CI tools want it: forward slashes, no leading ./"""
    text = str(path or "<spec>").replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _findings(report: dict, suppressed: bool) -> list[dict]:
    return [f for f in report.get("findings", ()) if suppressed or not f.get("suppressed")]


def _position(item: dict) -> tuple[int, int]:
    return max(int(item.get("line") or 1), 1), max(int(item.get("column") or 1), 1)


def _text(finding: dict) -> str:
    hint = finding.get("hint")
    return f"{finding['message']}\nhint: {hint}" if hint else finding["message"]


def _numbers_masked(message: str) -> str:
    return re.sub(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|\binf\b|\bnan\b", "#", message)


def _fingerprints(report: dict, findings: list[dict]) -> list[str]:
    """Stable per finding: spec path, code and layer (not the message, whose numbers move), plus an
    occurrence number only when one spec has several findings with the same code on the same layer."""
    seen: dict[tuple, int] = {}
    prints = []
    for finding in findings:
        key = (_path(finding.get("file") or report.get("spec")), finding["code"], finding.get("layer") or "")
        count = seen[key] = seen.get(key, -1) + 1
        prints.append(_sha("initdiag", *key, *([str(count)] if count else [])))
    return prints


def _invalid_fingerprint(item: dict) -> str:
    return _sha("initdiag", _path(item.get("file")), INVALID, _numbers_masked(item.get("message", "")))


def _sha(*parts: str) -> str:
    import hashlib  # here, not at the top: this module declares its formats at every start-up (REPORTERS)

    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


# ---- JUnit XML --------------------------------------------------------------------------------------

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(text))


def render_junit(reports: list[dict], invalid: list[dict] = (), suppressed: bool = False) -> str:
    """<testsuites> with one <testsuite> per spec: a <testcase> per layer plus one named after the spec
    for network-wide findings; errors and warnings are <failure>s, infos and suppressed findings go to
    <system-out>. Each invalid spec is a testsuite with one testcase holding an <error>."""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="initdiag")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for report in reports:
        spec = _path(report.get("spec"))
        suite = ET.SubElement(root, "testsuite", name=_xml(spec))
        names = [layer.get("name") for layer in report.get("layers", ())]
        cases = {name: ET.SubElement(suite, "testcase", classname=_xml(spec), name=_xml(name)) for name in names}
        cases[None] = ET.SubElement(suite, "testcase", classname=_xml(spec), name=_xml(spec))
        notes: dict = {}
        for finding in _findings(report, suppressed):
            layer = finding.get("layer") if finding.get("layer") in cases else None
            if finding["severity"] in ("error", "warning") and not finding.get("suppressed"):
                failure = ET.SubElement(cases[layer], "failure", message=_xml(finding["message"]), type=_xml(finding["code"]))
                failure.text = _xml(f"{finding['severity']}: {_text(finding)}")
            else:
                mark = "suppressed " if finding.get("suppressed") else ""
                notes.setdefault(layer, []).append(f"{mark}{finding['severity']} {finding['code']}: {_text(finding)}")
        for layer, lines in notes.items():
            ET.SubElement(cases[layer], "system-out").text = _xml("\n".join(lines))
        failed = sum(1 for case in cases.values() if case.find("failure") is not None)
        counts = {"tests": len(cases), "failures": failed, "errors": 0}
        suite.attrib.update({key: str(value) for key, value in counts.items()})
        totals = {key: totals[key] + counts[key] for key in totals}
    by_file: dict = {}
    for item in invalid:
        by_file.setdefault(_path(item.get("file")), []).append(item)
    for spec, items in by_file.items():
        suite = ET.SubElement(root, "testsuite", name=_xml(spec), tests="1", failures="0", errors="1")
        case = ET.SubElement(suite, "testcase", classname=_xml(spec), name=_xml(spec))
        error = ET.SubElement(case, "error", message=_xml(items[0].get("message", "")), type=INVALID)
        error.text = _xml("\n".join("{}:{}:{}: {}".format(spec, *_position(item), item.get("message", "")) for item in items))
        totals["tests"] += 1
        totals["errors"] += 1
    root.attrib.update({key: str(value) for key, value in totals.items()})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---- SARIF 2.1.0 ------------------------------------------------------------------------------------

def _rule(code: str) -> dict:
    short, help_text = RULES.get(code, (f"initdiag finding {code}", f"See the initdiag README for {code}."))
    name = "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", code) if part)
    return {"id": code, "name": name, "shortDescription": {"text": short},
            "fullDescription": {"text": f"{short}. {help_text}"}, "help": {"text": help_text},
            "defaultConfiguration": {"level": "error" if code == INVALID else "warning"}}


def _sarif_location(path: str, item: dict) -> dict:
    line, column = _position(item)
    return {"physicalLocation": {"artifactLocation": {"uri": quote(path, safe="/:@!$&'()*+,;=-._~")},
                                 "region": {"startLine": line, "startColumn": column}}}


def render_sarif(reports: list[dict], invalid: list[dict] = (), suppressed: bool = False) -> str:
    """One run; every known code is a rule (stable ruleIndex), unknown codes are appended."""
    codes = list(RULES)
    results = []

    def result(code, level, text, location, fingerprint, item):
        if code not in codes:
            codes.append(code)
        entry = {"ruleId": code, "ruleIndex": codes.index(code), "level": level, "message": {"text": text},
                 "locations": [location], "partialFingerprints": {"initdiagFingerprint/v1": fingerprint}}
        if item.get("layer"):
            entry["properties"] = {"layer": item["layer"]}
        if item.get("suppressed"):
            entry["suppressions"] = [{"kind": "external"}]
        results.append(entry)

    for report in reports:
        findings = _findings(report, suppressed)
        for finding, fingerprint in zip(findings, _fingerprints(report, findings)):
            path = _path(finding.get("file") or report.get("spec"))
            result(finding["code"], SARIF_LEVEL.get(finding["severity"], "note"), _text(finding),
                   _sarif_location(path, finding), fingerprint, finding)
    for item in invalid:
        result(INVALID, "error", item.get("message", ""), _sarif_location(_path(item.get("file")), item),
               _invalid_fingerprint(item), item)
    driver = {"name": "initdiag", "version": __version__, "semanticVersion": __version__,
              "informationUri": INFORMATION_URI, "rules": [_rule(code) for code in codes]}
    log = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
           "runs": [{"tool": {"driver": driver}, "results": results}]}
    import json

    return json.dumps(log, indent=2) + "\n"


# ---- GitHub Actions workflow commands ---------------------------------------------------------------

def _gh_data(text: str) -> str:
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _gh_command(command: str, properties: dict, message: str) -> str:
    props = ",".join(f"{key}={_gh_property(value)}" for key, value in properties.items())
    return f"::{command} {props}::{_gh_data(message)}"


def render_github(reports: list[dict], invalid: list[dict] = (), suppressed: bool = False) -> str:
    """One annotation per finding (error/warning/notice; suppressed ones as notices, titled so)."""
    lines = []
    for report in reports:
        for finding in _findings(report, suppressed):
            line, column = _position(finding)
            title = f"initdiag {finding['code']}" + (f" ({finding['layer']})" if finding.get("layer") else "")
            command = GITHUB_COMMAND.get(finding["severity"], "notice")
            if finding.get("suppressed"):
                command, title = "notice", f"{title} [suppressed {finding['severity']}]"
            properties = {"file": _path(finding.get("file") or report.get("spec")), "line": line, "col": column, "title": title}
            lines.append(_gh_command(command, properties, _text(finding)))
    for item in invalid:
        line, column = _position(item)
        properties = {"file": _path(item.get("file")), "line": line, "col": column, "title": f"initdiag {INVALID}"}
        lines.append(_gh_command("error", properties, item.get("message", "")))
    return "".join(line + "\n" for line in lines)


# ---- GitLab Code Quality ----------------------------------------------------------------------------

def render_gitlab(reports: list[dict], invalid: list[dict] = (), suppressed: bool = False) -> str:
    issues = []
    for report in reports:
        findings = _findings(report, suppressed)
        for finding, fingerprint in zip(findings, _fingerprints(report, findings)):
            mark = "[suppressed] " if finding.get("suppressed") else ""
            issues.append({
                "type": "issue", "description": f"{mark}{finding['message']}", "check_name": finding["code"],
                "content": {"body": finding.get("hint") or ""}, "fingerprint": fingerprint,
                "severity": "info" if mark else GITLAB_SEVERITY.get(finding["severity"], "info"),
                "location": {"path": _path(finding.get("file") or report.get("spec")),
                             "lines": {"begin": _position(finding)[0]}}})
    for item in invalid:
        issues.append({"type": "issue", "description": item.get("message", ""), "check_name": INVALID,
                       "fingerprint": _invalid_fingerprint(item), "severity": GITLAB_SEVERITY[INVALID],
                       "location": {"path": _path(item.get("file")), "lines": {"begin": _position(item)[0]}}})
    import json

    return json.dumps(issues, indent=2) + "\n"


# ---- Markdown summary -------------------------------------------------------------------------------

def _cell(value) -> str:
    text = "" if value is None else str(value)
    text = re.sub(r"([\\`*_\[\]<>|&#~])", r"\\\1", text)
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def _row(*cells) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def render_markdown(reports: list[dict], invalid: list[dict] = (), suppressed: bool = False) -> str:
    """A heading, a table of specs, then a findings table per spec that has findings."""
    out = ["## initdiag check", "", _row("spec", "verdict", "errors", "warnings", "infos"), "|---|---|---:|---:|---:|"]
    for report in reports:
        active = [f for f in report.get("findings", ()) if not f.get("suppressed")]
        counts = [sum(f["severity"] == severity for f in active) for severity in ("error", "warning", "info")]
        out.append(_row(_path(report.get("spec")), report.get("verdict"), *counts))
    for path in dict.fromkeys(_path(item.get("file")) for item in invalid):
        out.append(_row(path, "invalid", "-", "-", "-"))
    for report in reports:
        findings = _findings(report, suppressed)
        if not findings:
            continue
        out += ["", f"### {_cell(_path(report.get('spec')))}", "", _row("severity", "code", "layer", "message"), "|---|---|---|---|"]
        for f in findings:
            severity = f["severity"] + (" (suppressed)" if f.get("suppressed") else "")
            out.append(_row(severity, f["code"], f.get("layer") or "(network)", f["message"]))
    if invalid:
        out += ["", "### invalid specs", "", _row("spec", "line", "column", "message"), "|---|---:|---:|---|"]
        out += [_row(_path(item.get("file")), *_position(item), item.get("message", "")) for item in invalid]
    return "\n".join(out) + "\n"


REPORTERS = (
    Reporter("junit", "run", ("check",), {"check": f"{__name__}:render_junit"}, "JUnit XML, one test case per spec"),
    Reporter("sarif", "run", ("check",), {"check": f"{__name__}:render_sarif"}, "SARIF 2.1.0, for code scanning"),
    Reporter("github", "run", ("check",), {"check": f"{__name__}:render_github"}, "GitHub Actions annotations"),
    Reporter("gitlab", "run", ("check",), {"check": f"{__name__}:render_gitlab"}, "GitLab Code Quality report"),
    Reporter("markdown", "run", ("check",), {"check": f"{__name__}:render_markdown"},
             "a Markdown summary, e.g. for a pull request comment"),
)
