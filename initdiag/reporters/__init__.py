"""Reporters format what they are given; they never compute. One registry: REPORTERS, name -> Reporter.

A format declares itself in a light module of this package whose name ends in `_format` or `_formats`
(`json_format`, `text_format`, `ci_formats`): a module-level `REPORTERS = (Reporter(...), ...)` with its facts:

- `name`: what `--format` and the configuration's `format =` accept;
- `scope`: "spec", one report per spec (a run of many specs is composed by the CLI: text joins them, json wraps
  them in one document), or "run", the whole run's reports at once (the CI formats);
- `commands`: which of check, compare and recommend it serves;
- `renders`: per command, its render function as "module:function", imported only when used, so the JSON and
  CI formats never load rich. A spec-scope renderer is `render(report, **options) -> str`; a run-scope one
  `render(reports, invalid=(), suppressed=False) -> str`.

The CLI's `--format` choices (every command) and the configuration's valid formats are derived from it: adding
a format is one new module here plus its test rows (tests/test_reporters_contract.py checks every fact).
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple

SCOPES = ("spec", "run")
COMMANDS = ("check", "compare", "recommend")
DEFAULT = "text"


class Reporter(NamedTuple):
    name: str
    scope: str  # one of SCOPES
    commands: tuple  # a subset of COMMANDS
    renders: dict  # command -> "module:function"
    description: str = ""

    def renderer(self, command: str = "check"):
        """The render function for `command`, its module imported now."""
        module, _, function = self.renders[command].partition(":")
        return getattr(importlib.import_module(module), function)


def missing_facts(reporter) -> list[str]:
    """What a declared reporter lacks or gets wrong, one phrase per fact (empty: complete). The contract
    tests and the discovery below use it, so a new format's omission is named, not a traceback later."""
    problems = []
    name = getattr(reporter, "name", None)
    if not isinstance(name, str) or not name or not name.isidentifier():
        problems.append(f"name: expected a non-empty identifier-like string, not {name!r}")
    scope = getattr(reporter, "scope", None)
    if scope not in SCOPES:
        problems.append(f"scope: expected one of {', '.join(SCOPES)}, not {scope!r}")
    commands = getattr(reporter, "commands", None)
    if not commands or not isinstance(commands, tuple) or any(command not in COMMANDS for command in commands):
        problems.append(f"commands: expected a non-empty tuple drawn from {', '.join(COMMANDS)}, not {commands!r}")
        commands = ()
    renders = getattr(reporter, "renders", None)
    if not isinstance(renders, dict):
        problems.append(f"renders: expected a dict command -> 'module:function', not {renders!r}")
        renders = {}
    for command in commands:
        target = renders.get(command)
        if not isinstance(target, str) or ":" not in target:
            problems.append(f"render for {command}: expected 'module:function', not {target!r}")
            continue
        module, _, function = target.partition(":")
        try:
            found = callable(getattr(importlib.import_module(module), function, None))
        except ImportError as err:
            found, why = False, f" ({err})"
        else:
            why = ""
        if not found:
            problems.append(f"render for {command}: {target} is not an importable function{why}")
    if not isinstance(getattr(reporter, "description", None), str) or not reporter.description:
        problems.append("description: expected a one-line description for --help and the README")
    return problems


def _declaring_modules() -> list[str]:
    """This package's modules that declare formats, by their file names (none of the heavy ones is imported;
    a directory listing, as pkgutil would cost start-up time)."""
    names = {entry.name[:-3] for folder in __path__ if os.path.isdir(folder) for entry in os.scandir(folder)
             if entry.name.endswith(".py") and entry.name[:-3].endswith(("_format", "_formats"))}
    return sorted(names)


def _discover() -> dict:
    found: dict = {}
    for module_name in _declaring_modules():
        module = importlib.import_module(f"{__name__}.{module_name}")
        for reporter in getattr(module, "REPORTERS", ()):
            if reporter.name in found:
                raise ValueError(f"reporters: format {reporter.name!r} is declared twice ({module_name})")
            found[reporter.name] = reporter
    # the default first, then one report per spec, then the run's formats: the order --help lists them in
    return dict(sorted(found.items(), key=lambda item: (item[0] != DEFAULT, item[1].scope != "spec")))


REPORTERS = _discover()


def formats(command: str) -> tuple:
    """The formats `command` accepts, in REPORTERS' order."""
    return tuple(name for name, reporter in REPORTERS.items() if command in reporter.commands)
