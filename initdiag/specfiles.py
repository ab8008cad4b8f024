"""Which spec files a `check PATH...` means: files, folders (every *.yaml / *.yml below, sorted)
and glob patterns, less what --exclude patterns match."""

from __future__ import annotations

import fnmatch
import glob
from pathlib import Path

SUFFIXES = (".yaml", ".yml")


def expand(paths, exclude=()) -> tuple[list[Path], list[str]]:
    """(spec files in a stable order, a message for each argument that gave none)."""
    found: dict[Path, None] = {}
    unmatched = []
    for argument in paths:
        text = str(argument)
        path = Path(text)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.exists():
            matches = [path]
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        else:
            matches = []
        matches = [p for p in matches if not _excluded(p, exclude)]
        if path.is_dir() and not matches:
            unmatched.append(f"{text}: no spec files (*.yaml, *.yml) in this directory")
        elif not matches and not path.exists():
            unmatched.append(f"{text}: no such file, folder or matching spec")
        found.update(dict.fromkeys(matches))
    return list(found), unmatched


def is_pattern(path) -> bool:
    return glob.has_magic(str(path))


def _excluded(path: Path, patterns) -> bool:
    text = path.as_posix()
    return any(fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
