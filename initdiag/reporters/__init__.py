"""Reporters format a report they are given; they never compute. One registry: name -> render.

Each reporter module is imported when its format is used: JSON and the CI formats never load rich.
"""

from __future__ import annotations


def _text(report: dict, **options) -> str:
    from initdiag.reporters import text

    return text.render(report, **options)


def _json(report: dict, **options) -> str:
    from initdiag.reporters import json_format

    return json_format.render(report, **options)


REPORTERS = {"text": _text, "json": _json}
