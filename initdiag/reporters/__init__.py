"""Reporters format a report they are given; they never compute. One registry: name -> render."""

from __future__ import annotations

from initdiag.reporters import json_format, text

REPORTERS = {"text": text.render, "json": json_format.render}
