"""The compare report as text: schemes ranked best first, with a per-layer strip of each profile.

Like the check report it never cuts a number: in 80 columns the table splits in two.
"""

from __future__ import annotations

import io
import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from initdiag.numbers import compact
from initdiag.reporters.text import VERDICT_STYLE, natural_width, percent

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_RANGE = 3.0  # log10 units either side of flat: 1000x shrink ... 1000x growth


def sparkline(profile: list[float]) -> str:
    """One character per layer: log10 of the signal's second moment over the input's, -3..+3."""
    chars = []
    for value in profile:
        if not math.isfinite(value):
            chars.append("!")
            continue
        clipped = max(-SPARK_RANGE, min(SPARK_RANGE, value))
        chars.append(SPARKS[round((clipped + SPARK_RANGE) / (2 * SPARK_RANGE) * (len(SPARKS) - 1))])
    return "".join(chars)


def _ratio(value: float) -> str:
    return compact(value) + "x" if math.isfinite(value) else compact(value)


def _table(title, columns) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")
    return table


def _rows(compare: dict):
    for rank, name in enumerate(compare["ranking"], start=1):
        yield rank, name, compare["scores"][name]


def _worst(row: dict) -> str:
    return f"{row['worst_layer']}: {row['worst_code']}" if row["worst_code"] else "-"


def render(compare: dict, color: bool = False, width: int = 80) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color, highlight=False, emoji=False,
                      markup=False, color_system="standard" if color else None, soft_wrap=False)
    console.print(Text.assemble(("initdiag compare ", "bold"), (compare["spec"], "bold"),
                                f" · seed {compare['seed']} · {len(compare['ranking'])} schemes, best first"))
    console.print()
    wide = _table(None, [("#", "right"), ("scheme", "left"), ("verdict", "left"), ("health", "right"),
                         ("worst", "left"), ("drift", "right"), ("grad", "right"), ("dead%", "right"),
                         ("sat%", "right"), ("sym%", "right"), ("activation profile", "left")])
    for rank, name, row in _rows(compare):
        wide.add_row(str(rank), name, Text(row["verdict"], VERDICT_STYLE[row["verdict"]]), f"{row['health']:.0f}",
                     _worst(row), _ratio(row["activation_drift"]), _ratio(row["gradient_ratio"]),
                     percent(row["max_dead_fraction"]), percent(row["max_saturation"]), percent(row["max_symmetry"]),
                     sparkline(row["activation_profile"]))
    if natural_width(wide) <= width:
        console.print(wide)
    else:
        ranked = _table("ranking", [("#", "right"), ("scheme", "left"), ("verdict", "left"), ("health", "right"),
                                    ("worst", "left")])
        profiles = _table("profiles", [("#", "right"), ("drift", "right"), ("grad", "right"), ("dead%", "right"),
                                       ("sat%", "right"), ("sym%", "right"), ("activation profile", "left")])
        for rank, name, row in _rows(compare):
            ranked.add_row(str(rank), name, Text(row["verdict"], VERDICT_STYLE[row["verdict"]]), f"{row['health']:.0f}",
                           _worst(row))
            profiles.add_row(str(rank), _ratio(row["activation_drift"]), _ratio(row["gradient_ratio"]),
                             percent(row["max_dead_fraction"]), percent(row["max_saturation"]),
                             percent(row["max_symmetry"]), sparkline(row["activation_profile"]))
        console.print(ranked)
        console.print()
        console.print(profiles)
    console.print()
    console.print(Text("drift: last layer's activation second moment over the first's; grad: first layer's "
                       "weight-gradient RMS over the last's; profile: one character per layer, log10 of the "
                       "activation second moment over the input's from -3 (▁) to +3 (█), ! where it overflowed."))
    best = compare["ranking"][0]
    console.print()
    console.print(Text.assemble("best: ", (best, "bold"), f" ({compare['scores'][best]['verdict']})"))
    return out.getvalue()
