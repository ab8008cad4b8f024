"""One compact number format for tables and messages alike."""

from __future__ import annotations

import math


def compact(value, digits: int = 3) -> str:
    """`digits` significant digits, exponent without '+' or leading zeros: 0.0505, 1.98, 1.2e24, 3e-5."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text
