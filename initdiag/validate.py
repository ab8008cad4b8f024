"""Typed, located checks of user-written values; each failed check records one problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from initdiag.registry import UnknownNameError, canonical, closest
from initdiag.yamlsource import Document, SpecProblem


def format_path(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class Written(NamedTuple):
    """A name this stage cannot judge, kept as written with where it was: threshold names and finding codes
    are declared by the checks, a later stage (checks.spec_problems checks them before a run)."""

    name: object  # the threshold's key or the finding code, as written
    value: object  # the threshold's value as written; None for a finding code
    path: tuple  # its path in the document, e.g. ("thresholds", "dead_warnin")
    where: object  # yamlsource.Location of the name (a threshold's key)
    value_where: object  # yamlsource.Location of the value
    file: str


class Ignore(NamedTuple):
    """Finding codes a spec (or one layer) suppresses, and why."""

    codes: tuple  # as written; checks.spec_problems says which are not finding codes
    reason: str | None
    location: object  # yamlsource.Location of the ignore list, for unused-ignore findings
    written: tuple = ()  # Written, one per code, for located problems


class Checker:
    """Collects SpecProblems while reading a Document; returns None for a value that failed."""

    def __init__(self, doc: Document, base_dir: Path, allow_custom: bool = False):
        self.doc = doc
        self.base_dir = Path(base_dir)
        self.allow_custom = allow_custom
        self.problems: list[SpecProblem] = []
        self.pending: list = []  # every Written this checker kept for a later stage to judge

    def problem(self, path: tuple, message: str, key: bool = False) -> None:
        self.problems.append(SpecProblem(self.doc.where(path, key), format_path(path), message, file=self.doc.file))

    @staticmethod
    def type_name(value) -> str:
        if value is None:
            return "nothing (null)"
        if isinstance(value, bool):
            return f"a boolean ({str(value).lower()})"
        if isinstance(value, dict):
            return "a mapping"
        if isinstance(value, list):
            return "a list"
        if isinstance(value, str):
            return f"the text '{value}'"
        if isinstance(value, (int, float)):
            return f"the number {value}"
        return f"a {type(value).__name__}"

    show = type_name

    def unknown_key(self, path: tuple, key, choices, what: str = "key") -> None:
        near = closest(key, choices)
        hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(choices)}"
        self.problem(path, f"unknown {what} '{key}' ({hint})", key=True)

    def known_keys(self, path: tuple, mapping: dict, allowed) -> None:
        for key in mapping:
            if key not in allowed:
                self.unknown_key(path + (key,), key, allowed)

    def string(self, path: tuple, value) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.problem(path, f"expected a non-empty text, not {self.show(value)}")
        return None

    def integer(self, path: tuple, value, minimum: int | None = None, what: str = "value") -> int | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path, f"expected a whole number, not {self.show(value)}")
            return None
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            self.problem(path, f"expected a whole number, not {value}")
            return None
        value = int(value)
        if minimum is not None and value < minimum:
            need = "positive" if minimum == 1 else f"at least {minimum}"
            self.problem(path, f"the {what} must be {need}, not {value}")
            return None
        return value

    def number(self, path: tuple, value) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path, f"expected a number, not {self.show(value)}")
            return None
        if not math.isfinite(value):
            self.problem(path, f"expected a finite number, not {value}")
            return None
        return float(value)

    def boolean(self, path: tuple, value) -> bool | None:
        if isinstance(value, bool):
            return value
        self.problem(path, f"expected true or false, not {self.show(value)}")
        return None

    def choice(self, path: tuple, value, choices, what: str) -> str | None:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        if isinstance(value, str):
            near = closest(value, choices)
            hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(choices)}"
            self.problem(path, f"unknown {what} '{value}' ({hint})")
        else:
            self.problem(path, f"expected one of {', '.join(choices)}, not {self.show(value)}")
        return None

    def named_with_params(self, path: tuple, value, what: str):
        """`name` or `{name: params}` -> (name, params or None, path of params); None if neither."""
        if isinstance(value, str):
            return value, None, path
        if isinstance(value, dict) and len(value) == 1:
            (name, params), = value.items()
            return name, params, path + (name,)
        article = "an" if what[0] in "aeiou" else "a"
        self.problem(path, f"expected {article} {what} name, or a one-key mapping such as {{name: {{param: value}}}}, not {self.show(value)}")
        return None

    def registered(self, path: tuple, value, registry, aliases, what: str):
        """`name` or `{name: params}` looked up in a registry -> (entry, params or None, params path); None if invalid."""
        named = self.named_with_params(path, value, what)
        if named is None:
            return None
        name, params, params_path = named
        try:
            return registry[canonical(name, registry, aliases, what)], params, params_path
        except UnknownNameError as err:
            self.problem(path, str(err))
            return None

    def ignore(self, path: tuple, value) -> "Ignore | None":
        """`ignore: [codes]` or `ignore: {codes: [...], reason: text}`: finding codes to suppress."""
        codes, reason = value, None
        if isinstance(value, dict):
            self.known_keys(path, value, ("codes", "reason"))
            codes, reason = value.get("codes"), value.get("reason")
            if reason is not None and not isinstance(reason, str):
                self.problem(path + ("reason",), f"expected a text, not {self.show(reason)}")
            path = path + ("codes",)
        if isinstance(codes, str):
            codes = [codes]
        if not isinstance(codes, list) or not codes:
            self.problem(path, f"expected a list of finding codes such as [saturation], not {self.show(codes)}")
            return None
        written = tuple(self.written(path + (i,), code, None) for i, code in enumerate(codes))
        return Ignore(tuple(codes), reason, self.doc.where(path), written)

    def written(self, path: tuple, name, value) -> Written:
        """`name` (and `value`) at `path`, kept for the stage that knows the names."""
        written = Written(name, value, path, self.doc.where(path, key=True), self.doc.where(path), self.doc.file)
        self.pending.append(written)
        return written

    def resolve(self, relative: str) -> Path:
        """Paths in a spec are relative to the spec file's folder."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def npy(self, path: tuple, relative) -> np.ndarray | None:
        """Open a .npy file (memory-mapped, pickles refused) to check its shape; None if it cannot be read."""
        if not isinstance(relative, str) or not relative.strip():
            self.problem(path, f"expected the path of a .npy file, not {self.show(relative)}")
            return None
        file = self.resolve(relative)
        if not file.is_file():
            self.problem(path, f"no such file '{relative}' (looked for {file})")
            return None
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError:
            self.problem(path, f"'{relative}' is not a .npy array of numbers (pickled objects are refused)")
            return None
        except OSError as err:
            self.problem(path, f"cannot read '{relative}' ({err.strerror or err})")
            return None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
            self.problem(path, f"'{relative}' does not hold a numeric array")
            return None
        return array
