"""initdiag: is a network's weight initialization healthy, before any GPU hour is spent?

The Python API (initdiag.api, imported on first use so that `import initdiag` and the command line stay light):
`initdiag.check(spec, ...) -> initdiag.Report`, and `initdiag.SpecError` for an invalid spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Report", "SpecError", "check", "__version__"]

if TYPE_CHECKING:
    from initdiag.api import Report, SpecError, check


def __getattr__(name: str):
    if name in ("check", "Report", "SpecError"):
        from initdiag import api

        return getattr(api, name)
    raise AttributeError(f"module 'initdiag' has no attribute {name!r}")
