"""Importers: a model described elsewhere (a Hugging Face config.json, ...) written as a spec.

An importer reads a file and returns the text of a spec (YAML with a header comment saying where it came from
and what was approximated); it never runs a model and never downloads weights. One entry per source, keyed by
the name the command line takes: `initdiag import SOURCE FILE -o spec.yaml`.
"""

from __future__ import annotations

from typing import NamedTuple

from initdiag.importers import hf
from initdiag.importers.base import ImportProblem


class Importer(NamedTuple):
    describe: str     # what it reads, for --help and errors
    convert: object   # (path, *, steps=None, batch=None, layers=None) -> spec text; raises ImportProblem


IMPORTERS = {
    "hf": Importer("a Hugging Face config.json (model_type " + ", ".join(hf.TEMPLATES) + ")", hf.import_config),
}

__all__ = ["IMPORTERS", "ImportProblem", "Importer"]
