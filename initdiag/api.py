"""The Python API, for notebooks and test suites: `initdiag.check(spec) -> Report`, the same check as
`initdiag check` (gate.prepared applies seed, batch and scheme as the command line does; pipeline.diagnose runs
it), and `SpecError` with every located problem of an invalid spec. Configuration files are not read: what a
call says is what runs. Imported only when `initdiag.check`, `initdiag.Report` or `initdiag.SpecError` is used."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Union

from initdiag.yamlsource import SpecErrors, SpecProblem

SpecSource = Union[str, "PathLike[str]", Mapping[str, Any]]
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
HTML_FIGURES = ("act_var", "grad_var", "dead_fraction", "saturation")  # the layer table's main figures


class SpecError(ValueError):
    """An invalid spec (or scheme, thresholds, memory bound): `problems` are yamlsource.SpecProblem records, each
    with file, location (line, column), path and message; str() is the command line's lines, one per problem."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))

    def __reduce__(self):
        return SpecError, (list(self.problems),)


class Report:
    """One check's report: the JSON report's data (`to_dict()`), with its verdict, findings and layers at hand.

    `exit_code` is what `initdiag check` exits with for it (no configuration file): 1 when a finding that is not
    suppressed is an error, else 0."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        from initdiag.reporters.json_format import strict

        object.__setattr__(self, "_data", strict(data))  # as the JSON report has it: inf and NaN are None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Report is read-only; to_dict() gives a copy to change")

    def __reduce__(self):
        return Report, (self._data,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]  # it holds a dict

    @property
    def name(self) -> str:
        return self._data["name"]

    @property
    def verdict(self) -> str:
        """healthy, warning or failing."""
        return self._data["verdict"]

    @property
    def findings(self) -> tuple:
        """checks.Finding records (severity, code, layer, message, hint, ...), most severe first."""
        from initdiag import seeds

        return tuple(seeds.findings(self._data))

    @property
    def layers(self) -> tuple:
        """One dict per layer, with the JSON report's keys (name, kind, act_var, grad_var, dead_fraction, ...)."""
        return tuple(dict(layer) for layer in self.to_dict()["layers"])

    @property
    def exit_code(self) -> int:
        from initdiag import checks

        return 1 if checks.fails(self.findings, "error") else 0

    def to_dict(self) -> dict:
        """The JSON report's data: equal to `initdiag check --format json`'s output, parsed (a fresh copy)."""
        return json.loads(json.dumps(self._data))

    def to_json(self) -> str:
        """The JSON report, as `initdiag check --format json` writes it."""
        from initdiag.reporters.json_format import render

        return render(self._data)

    def to_frame(self):
        """The layers as a pandas DataFrame, one row per layer, the JSON report's keys as columns."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Report.to_frame() needs pandas: pip install pandas") from None
        layers = self.layers
        columns = list(layers[0]) if layers else []
        return pandas.DataFrame([{key: value for key, value in layer.items()} for layer in layers], columns=columns)

    def __repr__(self) -> str:
        counts = {severity: 0 for severity in ("error", "warning", "info")}
        for finding in self.findings:
            if not finding.suppressed:
                counts[finding.severity] += 1
        findings = ", ".join(f"{count} {severity}{'s' if count != 1 and severity != 'info' else ''}" for severity, count in counts.items())
        return f"<initdiag.Report {self.name!r}: {self.verdict}, {len(self._data['layers'])} layers, {findings}>"

    def _repr_html_(self) -> str:
        """A notebook's view: the verdict, the findings and each layer's main figures."""
        escape = html.escape
        head = "".join(f"<th>{escape(column)}</th>" for column in ("layer", "kind", "activation") + HTML_FIGURES)
        rows = "".join(
            "<tr>" + "".join(f"<td>{escape(str(layer.get(key)))}</td>" for key in ("name", "kind", "activation"))
            + "".join(f"<td>{_figure(layer.get(key))}</td>" for key in HTML_FIGURES) + "</tr>"
            for layer in self._data["layers"])
        findings = "".join(f"<li><b>{escape(f.severity)}</b> {escape(f.code)}"
                           f"{' (' + escape(f.layer) + ')' if f.layer else ''}: {escape(f.message)}</li>"
                           for f in self.findings if not f.suppressed)
        return (f"<div><p><b>{escape(str(self.name))}</b>: {escape(self.verdict)}</p>"
                + (f"<ul>{findings}</ul>" if findings else "")
                + f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


def _figure(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def check(spec: SpecSource, *, scheme: str | Mapping[str, Any] | None = None, seed: int | None = None,
          batch: int | None = None, thresholds: Mapping[str, float] | None = None,
          max_memory: int | str | None = None, allow_custom: bool = False) -> Report:
    """Check one spec as `initdiag check` does and return its Report.

    `spec`: a spec file (a Path, or a str naming an existing file or ending in .yaml/.yml/.json), YAML text, or the
    spec's data as a dict. `scheme`: a scheme name or mapping ({'normal': {'std': 0.01}}) for every layer, as
    --scheme. `seed`, `batch`: replace the spec's. `thresholds`: name -> value, as --threshold (the spec's own
    `thresholds:` win). `max_memory`: bytes or a size such as '8GB' (default: half the available memory).
    Raises SpecError, with every located problem, for an invalid spec, scheme, threshold or memory bound."""
    from initdiag import checks, gate, pipeline

    try:
        network_spec = _parsed(spec, allow_custom)
        scheme_text = None if scheme is None else scheme if isinstance(scheme, str) else json.dumps(scheme)
        network_spec, label = gate.prepared(network_spec, seed, batch, scheme_text, allow_custom, shown_as="scheme")
        diagnosis = pipeline.diagnose(network_spec, _thresholds(thresholds), label, _memory(max_memory))
    except SpecErrors as errors:
        raise SpecError(checks.completed(errors).problems) from None
    return Report(diagnosis.report)


def check_module(model, example_input, *, scheme: str | Mapping[str, Any] | None = None, seed: int | None = None,
                 batch: int | None = None, thresholds: Mapping[str, float] | None = None,
                 max_memory: int | str | None = None) -> Report:
    """Check a PyTorch nn.Module as `initdiag check --torch` does: trace it with torch.fx on `example_input` (a
    batch tensor: images, or integer token ids when the model starts with an embedding; its first axis is the
    check's batch unless `batch` is given), write it as a spec whose layers hold the module's current
    parameters, and check that (under `scheme` if given, redrawing the matrices). The model is left as it was; modules that do not feed its first output (auxiliary heads) are
    left out with a UserWarning naming them. Raises SpecError (located problems) if the model cannot be written
    as a spec (an op with no spec equivalent, named with its module path)."""
    from initdiag.importers import ImportProblem, torch_fx

    try:
        draft = torch_fx.from_module(model, example_input, name=type(model).__name__,
                                     batch=batch or int(example_input.shape[0]),
                                     header=[f"{type(model).__name__}, checked by initdiag.check_module."])
    except ImportProblem as problem:
        raise SpecError([SpecProblem(None, "", str(problem), file="<module>")]) from None
    if draft.left_out:
        import warnings

        warnings.warn(f"{type(model).__name__}: not analysed: {', '.join(draft.left_out)} (they do not feed the first "
                      "output)", stacklevel=2)
    path, holder = draft.written_to_temporary()
    with holder:
        return check(path, scheme=scheme, seed=seed, batch=batch, thresholds=thresholds, max_memory=max_memory)


def _parsed(source: SpecSource, allow_custom: bool):
    """The validated NetworkSpec of a path, a YAML text or a dict; SpecErrors if invalid."""
    from initdiag import spec

    if isinstance(source, Mapping):
        try:
            text = json.dumps(source, indent=2)  # JSON is YAML: one key per line, so problems have useful lines
        except (TypeError, ValueError) as err:
            raise SpecErrors([SpecProblem(None, "", f"the spec's data must be plain YAML data "
                                                    f"(dicts, lists, str, numbers, bool, None): {err}", file="<dict>")]) from None
        return _parsed_text(text, "<dict>", allow_custom)
    if isinstance(source, PathLike) or (isinstance(source, str) and _names_a_file(source)):
        return spec.load(Path(source), allow_custom=allow_custom, shown_as=str(source))
    if isinstance(source, str):
        return _parsed_text(source, "<text>", allow_custom)
    raise TypeError(f"initdiag.check: expected a path, YAML text or a dict, not {type(source).__name__}")


def _names_a_file(text: str) -> bool:
    return "\n" not in text and (text.strip().endswith(SPEC_SUFFIXES) or Path(text).is_file())


def _parsed_text(text: str, file: str, allow_custom: bool):
    from initdiag import spec, yamlsource

    try:
        doc = yamlsource.loads(text, file)
    except SpecProblem as problem:
        raise SpecErrors([problem]) from None
    return spec.parse(doc, Path.cwd(), "spec", allow_custom)


def _thresholds(changes: Mapping[str, float] | None):
    """The Thresholds with `changes` (name -> value, as --threshold); SpecErrors naming an unknown one."""
    from initdiag.checks import Thresholds
    from initdiag.registry import closest

    changes = {str(name).replace("-", "_"): value for name, value in (changes or {}).items()}
    problems = [SpecProblem(None, f"thresholds.{name}", f"expected a number >= 0, not {value!r}", file="<thresholds>")
                for name, value in changes.items()
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0]
    known = list(Thresholds._fields)
    for name in changes:
        if name not in known:
            near = closest(name, known)
            hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(known)}"
            problems.append(SpecProblem(None, "thresholds", f"unknown threshold '{name}' ({hint})", file="<thresholds>"))
    if problems:
        raise SpecErrors(problems)
    return Thresholds().override({name: float(value) for name, value in changes.items()})


def _memory(bound: int | str | None) -> int | None:
    from initdiag import outputs

    if bound is None or (isinstance(bound, int) and not isinstance(bound, bool) and bound > 0):
        return bound
    try:
        return outputs.parse_size(str(bound))
    except ValueError as err:
        raise SpecErrors([SpecProblem(None, "max_memory", str(err), file="<max_memory>")]) from None
