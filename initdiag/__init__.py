"""initdiag: is a network's weight initialization healthy, before any GPU hour is spent?

The Python API (initdiag.api, imported on first use so that `import initdiag` and the command line stay light):
`initdiag.check(spec, ...) -> initdiag.Report`, `initdiag.check_module(model, example_input, ...) -> initdiag.Report`
for a PyTorch nn.Module, and `initdiag.SpecError` for an invalid spec or model."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Report", "SpecError", "check", "check_module", "__version__"]

if TYPE_CHECKING:
    from initdiag.api import Report, SpecError, check, check_module


def __getattr__(name: str):
    if name in ("check", "check_module", "Report", "SpecError"):
        from initdiag import api

        return getattr(api, name)
    raise AttributeError(f"module 'initdiag' has no attribute {name!r}")
