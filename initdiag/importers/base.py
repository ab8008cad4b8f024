"""What every importer shares: its one error type."""

from __future__ import annotations


class ImportProblem(ValueError):
    """An input the importer cannot use; its message is one located line (`FILE: ...`, `FILE:LINE:COL: ...`)."""
