"""The JSON report: strict JSON, so inf and NaN (which JSON lacks) are written as null."""

from __future__ import annotations

import math

from initdiag.reporters import Reporter

REPORTERS = (
    Reporter("json", "spec", ("check", "compare", "recommend"),
             {command: "initdiag.reporters.json_format:render" for command in ("check", "compare", "recommend")},
             "every figure, for scripts (strict JSON: inf and NaN as null)"),
)


def strict(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def render(report: dict, **_options) -> str:  # JSON always carries everything, theory included
    import json  # only for this format: it costs start-up time

    return json.dumps(strict(report), indent=2, allow_nan=False) + "\n"
