"""Writing results: atomically, and never over anything the user wrote as input."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """'8GB', '512MiB', '1.5g', '1000000' -> bytes; ValueError with the accepted forms otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(f"'{text}' is not a size; write e.g. 8GB, 512MB, 2GiB or a number of bytes")
    size = float(match.group(1)) * UNITS[match.group(2).lower()]
    if size <= 0:
        raise ValueError(f"'{text}' must be more than 0 bytes")
    return int(size)


def check_target(path, protected=()) -> Path:
    """The resolved `path`, if a file can be written there: not over a `protected` input (ValueError),
    not a directory, and in a folder that exists (OSError)."""
    target = Path(path).resolve()
    for other in protected:
        if Path(other).resolve() == target:
            raise ValueError(f"refusing to write over the input file {other}")
    if target.is_dir():
        raise IsADirectoryError(21, "it is a directory")
    if not target.parent.is_dir():
        raise FileNotFoundError(2, f"no folder {target.parent}")
    return target


@contextmanager
def atomic_writer(path, protected=(), binary: bool = False):
    """A handle on a temporary file beside `path`, renamed over it once the block completes,
    so readers never see half a file; on error the temporary file is removed."""
    import tempfile  # only when writing: it costs start-up time

    target = check_target(path, protected)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
        # mkstemp makes the file private; give it the mode any new file would get
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_atomic(path: Path, text: str, protected=()) -> None:
    """Write `text` atomically (see atomic_writer); ValueError if `path` is a `protected` input."""
    with atomic_writer(path, protected) as handle:
        handle.write(text)
