"""Project configuration for CI gates, found the way ruff finds its own.

From a folder (default: the current one) up to the filesystem root, the first of, per folder:
`initdiag.toml`, `.initdiag.toml`, then `pyproject.toml` if it has a `[tool.initdiag]` table.
Keys are kebab-case (snake_case accepted too). Precedence, lowest first: built-in defaults, the
file's top level, the file's `[[overrides]]` whose `paths` match the spec (relative to the file's
folder, later overrides winning), the command line. Every problem is reported at once.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
from pathlib import Path
from typing import NamedTuple

CANDIDATES = ("initdiag.toml", ".initdiag.toml", "pyproject.toml")
FAIL_ON = ("error", "warning", "info", "never")
SETTINGS = ("fail-on", "format", "exclude", "seed", "seeds", "batch", "thresholds")
PER_PATH = ("paths", "fail-on", "seed", "seeds", "batch", "thresholds")  # what an override may set
DEFAULT, COMMAND_LINE = "default", "command line"


class ConfigError(ValueError):
    """Every problem of a configuration, one `file: dotted.key: message` line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Settings(NamedTuple):
    fail_on: str = "error"
    format: str = "text"
    exclude: tuple = ()
    seed: int | None = None  # None: the spec's own
    seeds: int = 1  # how many seeds from `seed` each check runs and combines (initdiag.seeds)
    batch: int | None = None
    thresholds: dict = {}  # every threshold by its field name, as floats (see settings())


def find_config(start: Path) -> Path | None:
    """The configuration file that governs `start` (a folder), or None."""
    folder = Path(start).resolve()
    for directory in (folder, *folder.parents):
        for name in CANDIDATES:
            path = directory / name
            if path.is_file() and (name != "pyproject.toml" or (_mentions_us(path) and _table(path, _read(path))[0] is not None)):
                return path
    return None


def _mentions_us(path: Path) -> bool:
    """A cheap look before parsing TOML: most pyproject.toml files have no [tool.initdiag] at all."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # let the real reader report it
    # a [tool.initdiag...] table header or a dotted tool.initdiag.key (a [project.scripts] `initdiag = ...`
    # entry, as in initdiag's own pyproject, must not count)
    import re

    return re.search(r"^\s*(\[\s*)?tool\s*\.\s*initdiag\b", text, re.MULTILINE) is not None


def load(path: Path | None = None, start: Path | None = None, isolated: bool = False, *, thresholds: dict) -> "Config":
    """The configuration named by `path` (--config), else found from `start`; none with `isolated`.
    `thresholds`: every threshold's name and default (checks.Thresholds()._asdict()): the checks declare
    them, and this stage does not import the checks."""
    if isolated:
        if path is not None:
            raise ConfigError(["--config and --isolated cannot be used together"])
        return Config(None, {}, [], thresholds)
    if path is None:
        path = find_config(Path.cwd() if start is None else start)
        if path is None:
            return Config(None, {}, [], thresholds)
    path = Path(path)
    table, prefix = _table(path, _read(path))
    if table is None:
        raise ConfigError([f"{path}: no [tool.initdiag] table"])
    problems: list[str] = []
    top = _settings(table, SETTINGS + ("overrides",), f"{path}: {prefix}", problems, thresholds)
    overrides = []
    raw = top.pop("overrides", [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        problems.append(f"{path}: {prefix}overrides: expected an array of tables ([[{prefix}overrides]])")
        raw = []
    for index, item in enumerate(raw):
        where = f"{path}: {prefix}overrides[{index}]."
        values = _settings(item, PER_PATH, where, problems, thresholds)
        if "paths" not in item:
            problems.append(f"{where}paths: required: the globs of the specs this override applies to")
        if "paths" in values:
            overrides.append((index, values.pop("paths"), values))  # (index, globs, settings)
    if problems:
        raise ConfigError(problems)
    return Config(path, top, overrides, thresholds)


class Config:
    """A loaded configuration (`file` is None without one): settings per spec and where they came from."""

    def __init__(self, file: Path | None, values: dict, overrides: list, thresholds: dict):
        self.file = file
        self.values = values
        self.overrides = overrides
        self.thresholds = dict(thresholds)  # every threshold's name -> default

    def sources(self, spec_path: Path | None = None, cli: dict | None = None) -> dict:
        """{setting: (value, source)}, thresholds as `thresholds.<name>` entries."""
        found = {key: (value, DEFAULT) for key, value in Settings()._asdict().items() if key != "thresholds"}
        found.update({f"thresholds.{name}": (value, DEFAULT) for name, value in self.thresholds.items()})
        layers = [(self.values, str(self.file))]
        layers += [(values, f"{self.file} overrides[{index}]") for index, _, values in self._matching(spec_path)]
        layers.append((self._command_line(cli), COMMAND_LINE))
        for values, source in layers:
            for key, value in values.items():
                if key == "thresholds":
                    found.update({f"thresholds.{name}": (v, source) for name, v in value.items()})
                else:
                    found[key] = (value, source)
        return found

    def settings(self, spec_path: Path | None = None, cli: dict | None = None) -> Settings:
        """The settings for one spec (None: the run as a whole, no override applies)."""
        values, thresholds = {}, {}
        for key, (value, _) in self.sources(spec_path, cli).items():
            if key.startswith("thresholds."):
                thresholds[key.partition(".")[2]] = value
            else:
                values[key] = value
        return Settings(**values, thresholds=thresholds)

    def excluded(self, spec_path: Path, cli: dict | None = None) -> bool:
        """Whether `exclude` skips this spec: the file's patterns relative to its folder, the command line's to the current one."""
        patterns, source = self.sources(None, cli)["exclude"]
        base = Path.cwd() if source == COMMAND_LINE else self._base()
        relative = _relative(spec_path, base)
        return relative is not None and any(_glob(relative, p) or _glob(Path(spec_path).name, p) for p in patterns)

    def describe(self, spec_path: Path | None = None, cli: dict | None = None) -> str:
        """What `initdiag config --show` prints: every setting, its value and its source."""
        lines = [f"config file: {self.file if self.file else '(none)'}"]
        if spec_path is not None:
            lines.append(f"for spec: {spec_path}")
        shown = []
        for key, (value, source) in self.sources(spec_path, cli).items():
            if key.startswith("thresholds.") and not shown[-1][0].startswith(" "):
                shown.append(("thresholds:", "", ""))
            name = "  " + key.partition(".")[2] if key.startswith("thresholds.") else key.replace("_", "-")
            shown.append((name, _show(value), source))
        width, value_width = (max(len(row[i]) for row in shown) + 2 for i in (0, 1))
        lines += [f"{name:<{width}}{value:<{value_width}}{source}".rstrip() for name, value, source in shown]
        return "\n".join(lines)

    def _base(self) -> Path:
        return self.file.resolve().parent if self.file else Path.cwd()

    def _matching(self, spec_path):
        relative = None if spec_path is None or self.file is None else _relative(spec_path, self._base())
        if relative is None:
            return []
        return [o for o in self.overrides if any(_glob(relative, pattern) for pattern in o[1])]

    def _command_line(self, cli) -> dict:
        given = {key.replace("_", "-"): value for key, value in (cli or {}).items() if value not in (None, [], (), {})}
        problems: list[str] = []
        values = _settings(given, SETTINGS, "command line: ", problems, self.thresholds)
        if problems:
            raise ConfigError(problems)
        return values


def _read(path: Path) -> dict:
    try:  # lazily: only when there is a file to read
        import tomllib
    except ImportError:  # Python 3.10: the same parser, packaged (needs `tomli; python_version < "3.11"`)
        import tomli as tomllib

    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([f"{path}: cannot read: {err}"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path}: invalid TOML: {err}"]) from None


def _table(path: Path, document: dict):
    """(the initdiag settings table or None, the dotted prefix of its keys) in either layout."""
    tool = document.get("tool")
    if isinstance(tool, dict) and "initdiag" in tool:
        if not isinstance(tool["initdiag"], dict):
            raise ConfigError([f"{path}: tool.initdiag: expected a table, got {_kind(tool['initdiag'])}"])
        return tool["initdiag"], "tool.initdiag."
    if path.name == "pyproject.toml":
        return None, ""
    return document, ""


def _settings(table: dict, allowed: tuple, where: str, problems: list, thresholds: dict) -> dict:
    """{snake_case name: checked value} of a table, each problem appended as `where + key: message`."""
    out, spelled = {}, {}
    for raw, value in table.items():
        key = raw.replace("_", "-")
        if key in SETTINGS and key not in allowed:
            problems.append(f"{where}{raw}: not allowed in an override, only at the top level")
        elif key not in allowed:
            near = _closest(key, allowed)
            hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(allowed)}"
            problems.append(f"{where}{raw}: unknown key ({hint})")
        elif key in spelled:
            problems.append(f"{where}{raw}: given twice (as '{spelled[key]}' and '{raw}')")
        else:
            spelled[key] = raw
            checked = _check(key, value, f"{where}{raw}", problems, tuple(thresholds))
            if checked is not _BAD:
                out[key.replace("-", "_")] = checked
    return out


_BAD = object()


def formats() -> tuple:
    """The valid `format =` values: check's formats in the REPORTERS registry (the one list --format uses too)."""
    from initdiag.reporters import formats as declared

    return declared("check")


def _check(key: str, value, where: str, problems: list, thresholds: tuple):
    """The value of one setting, or _BAD after appending why it is not one."""
    if key in ("fail-on", "format"):
        choices = FAIL_ON if key == "fail-on" else formats()
        value = getattr(value, "value", value)  # the CLI's enums
        if isinstance(value, str) and value in choices:
            return value
        near = _closest(value, choices) if isinstance(value, str) else None
        hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(choices)}"
        shown = repr(value) if isinstance(value, str) else _repr(value)
        return _fail(problems, f"{where}: {shown} is not valid ({hint})")
    if key == "overrides":
        return value  # checked by load(), entry by entry
    if key in ("exclude", "paths"):
        strings = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        if strings and (value or key == "exclude"):
            return tuple(value)
        return _fail(problems, f"{where}: expected a{' non-empty' if key == 'paths' else ''} list of glob strings, got {_repr(value)}")
    if key in ("seed", "seeds", "batch"):
        low = 0 if key == "seed" else 1
        if isinstance(value, int) and not isinstance(value, bool) and value >= low:
            return value
        return _fail(problems, f"{where}: expected an integer >= {low}, got {_repr(value)}")
    if key == "thresholds":
        if not isinstance(value, dict):
            return _fail(problems, f"{where}: expected a table of name = number, got {_repr(value)}")
        checked, count = {}, len(problems)
        for name, number in value.items():
            field = name.replace("-", "_")
            if field not in thresholds:
                near = _closest(field, thresholds)
                hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(thresholds)}"
                problems.append(f"{where}.{name}: unknown threshold ({hint})")
            elif field in checked:
                problems.append(f"{where}.{name}: given twice")
            elif isinstance(number, (int, float)) and not isinstance(number, bool) and number >= 0:  # NaN fails >= 0
                checked[field] = float(number)
            else:
                problems.append(f"{where}.{name}: expected a number >= 0, got {_repr(number)}")
        return checked if len(problems) == count else _BAD
    raise AssertionError(key)


def _fail(problems: list, message: str):
    problems.append(message)
    return _BAD


def _closest(name, choices):
    from initdiag.registry import closest

    return closest(name, choices)


def _kind(value) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}
    return kinds.get(type(value), type(value).__name__)


def _repr(value) -> str:
    return _kind(value) if isinstance(value, dict) else f"{value!r} ({_kind(value)})"


def _show(value) -> str:
    if value is None:
        return "(the spec's)"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _relative(spec_path, base: Path) -> str | None:
    """The spec's path relative to `base` in posix form, or None outside it."""
    try:
        return Path(spec_path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return None


def _glob(path: str, pattern: str) -> bool:
    """fnmatch, where `**/` also matches no folder at all (`specs/**/*.yaml` matches `specs/a.yaml`)."""
    pattern = pattern.replace(os.sep, "/")
    parts = pattern.split("**/")
    for keep in itertools.product(("**/", ""), repeat=len(parts) - 1):
        candidate = parts[0] + "".join(k + p for k, p in zip(keep, parts[1:]))
        if fnmatch.fnmatch(path, candidate):
            return True
    return False
