"""The names users write that the checks declare: a spec's `thresholds:` and `ignore:` entries, kept as
written by the spec stage (which does not import the checks) and checked here before a run. Problems keep
the spec stage's wording and locations. (`--threshold` and configuration names are checked by the CLI
against Thresholds, and by config against the defaults the CLI hands it.)"""

from __future__ import annotations

import math

from initdiag.checks import CHECKS, Thresholds
from initdiag.registry import closest
from initdiag.validate import Checker, format_path
from initdiag.yamlsource import SpecErrors, SpecProblem


def _hint(name, choices) -> str:
    near = closest(str(name), choices)
    return f"did you mean '{near}'?" if near else f"expected one of: {', '.join(choices)}"


def _threshold(entry, problems: list):
    """The value of one written `thresholds:` entry, or None after recording why it is not one."""
    def problem(where, message):
        problems.append(SpecProblem(where, format_path(entry.path), message, file=entry.file))

    if str(entry.name).replace("-", "_") not in Thresholds._fields:
        return problem(entry.where, f"unknown threshold '{entry.name}' ({_hint(entry.name, Thresholds._fields)})")
    number = entry.value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return problem(entry.value_where, f"expected a number, not {Checker.type_name(number)}")
    if not math.isfinite(number):
        return problem(entry.value_where, f"expected a finite number, not {number}")
    if number < 0:
        return problem(entry.value_where, f"a threshold must be >= 0, not {float(number)}")
    return float(number)


def written_problems(entries) -> list:
    """Every unknown threshold, bad threshold value and unknown finding code among `entries` (validate.Written,
    as the spec stage kept them: a `thresholds:` entry's path starts with "thresholds", an `ignore:` code's
    does not), as located SpecProblems in the file's order."""
    problems, codes = [], list(CHECKS)
    for entry in entries:
        if entry.path[:1] == ("thresholds",):
            _threshold(entry, problems)
        elif not (isinstance(entry.name, str) and entry.name in CHECKS):
            problems.append(SpecProblem(entry.value_where, format_path(entry.path),
                                        f"unknown finding code '{entry.name}' ({_hint(entry.name, codes)})", file=entry.file))
    return sorted(problems, key=_position)


def _position(problem) -> tuple:
    return (problem.location.line, problem.location.column) if problem.location else (0, 0)


def spec_problems(spec) -> list:
    """written_problems of a parsed spec's thresholds and the ignore lists of the spec and its layers."""
    ignores = [getattr(spec, "ignore", None)] + [getattr(layer, "ignore", None) for layer in spec.layers]
    return written_problems(tuple(getattr(spec, "thresholds", ()) or ()) +
                            tuple(written for ignore in ignores if ignore for written in ignore.written))


def completed(errors: SpecErrors) -> SpecErrors:
    """A spec's problems together with those of the names it kept for the checks (errors.pending), in the
    file's order: a spec with a structural mistake and an unknown threshold gets both in one run."""
    extra = written_problems(errors.pending)
    return SpecErrors(sorted(list(errors.problems) + extra, key=_position)) if extra else errors


def spec_thresholds(spec) -> dict:
    """The spec's own threshold overrides, name -> value; SpecErrors with every problem of its names."""
    problems = spec_problems(spec)
    if problems:
        raise SpecErrors(problems)
    return {str(entry.name).replace("-", "_"): float(entry.value) for entry in getattr(spec, "thresholds", ()) or ()}
