"""The text format's declaration (the renderers, which need rich, are imported only when text is used)."""

from __future__ import annotations

from initdiag.reporters import Reporter

REPORTERS = (
    Reporter("text", "spec", ("check", "compare", "recommend"),
             {"check": "initdiag.reporters.text:render", "compare": "initdiag.reporters.compare_text:render",
              "recommend": "initdiag.reporters.recommend_text:render"},
             "tables for people, coloured on a terminal"),
)
