"""The recommendation as text: candidates ranked, per layer the rule of thumb beside the measured best
with both profiles' figures, why they differ, and the calibrated gains.

Like the other reports it never cuts a number: compact figures, columns that fold, no minimum
widths, and tables split in two when one would not fit the width.
"""

from __future__ import annotations

import io
import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from initdiag.numbers import compact
from initdiag.reporters.text import VERDICT_STYLE, natural_width

AGREE_STYLE = {True: "green", False: "bold yellow"}


def _table(title: str | None, columns: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")
    return table


def ratio(value) -> str:
    """A factor of the input's second moment: 1.02x, 1/11, 0, inf."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf"
    if value <= 0:
        return "0"
    return f"{compact(value)}x" if value >= 1 else f"1/{compact(1 / value)}"


def runs(names: list[str]) -> str:
    """relu×9 xavier: an assignment of schemes to layers, consecutive repeats folded."""
    parts, previous, count = [], None, 0
    for name in names + [None]:
        if name == previous:
            count += 1
            continue
        if previous is not None:
            parts.append(f"{previous}×{count}" if count > 1 else previous)
        previous, count = name, 1
    return " ".join(parts)


def _span(layers: list[dict]) -> str:
    if len(layers) == 1:
        return layers[0]["name"]
    return f"{layers[0]['name']}..{layers[-1]['name']} ({len(layers)} layers)"


def _groups(layers: list[dict], key) -> list[list[dict]]:
    """Consecutive layers sharing key(layer), skipping those where it is None."""
    groups: list[list[dict]] = []
    for layer in layers:
        value = key(layer)
        if value is None:
            continue
        if groups and key(groups[-1][-1]) == value and groups[-1][-1]["index"] == layer["index"] - 1:
            groups[-1].append(layer)
        else:
            groups.append([layer])
    return groups


def _verdict(rec: dict, name: str) -> Text:
    score = rec["scores"][name] if name in rec["scores"] else rec["current"]
    return Text.assemble((score["verdict"], VERDICT_STYLE[score["verdict"]]), f", health {score['health']:.0f}")


def _summary(rec: dict) -> list[Text]:
    best, rule = rec["measured_best"], rec["rule_candidate"]
    current = rec["current"]
    lines = [
        Text.assemble("measured best: ", (best, "bold"), " (", _verdict(rec, best), ")"),
        Text.assemble("rules of thumb: ", (rule, "bold"), " (", _verdict(rec, rule), ")"),
        Text.assemble("as written: ", (runs([layer["current"] for layer in rec["layers"]]), "bold"), " (",
                      (current["verdict"], VERDICT_STYLE[current["verdict"]]), f", health {current['health']:.0f})"),
    ]
    agreeing = sum(layer["agree"] for layer in rec["layers"])
    lines.append(Text(f"they agree on {agreeing} of {len(rec['layers'])} layers"))
    return lines


def _candidates(rec: dict, width: int) -> list[Table]:
    columns = [("#", "right"), ("candidate", "left"), ("verdict", "left"), ("health", "right"), ("drift", "right"),
               ("grad", "right"), ("layers", "left")]
    wide = _table("candidates, best first", columns)
    for rank, name in enumerate(rec["ranking"], start=1):
        wide.add_row(*_candidate_row(rec, rank, name))
    if natural_width(wide) <= width:
        return [wide]
    ranked = _table("candidates, best first", columns[:4] + [("layers", "left")])
    figures = _table("their profiles", [("#", "right"), ("drift", "right"), ("grad", "right")])
    for rank, name in enumerate(rec["ranking"], start=1):
        row = _candidate_row(rec, rank, name)
        ranked.add_row(*row[:4], row[6])
        figures.add_row(row[0], row[4], row[5])
    return [ranked, figures]


def _candidate_row(rec: dict, rank: int, name: str) -> list:
    score = rec["scores"][name]
    label = Text(name, "bold") if name == rec["measured_best"] else name
    drift = score["activation_drift"]
    grad = score["gradient_ratio"]
    return [str(rank), label, Text(score["verdict"], VERDICT_STYLE[score["verdict"]]), f"{score['health']:.0f}",
            f"{compact(drift)}x" if math.isfinite(drift) else compact(drift),
            f"{compact(grad)}x" if math.isfinite(grad) else compact(grad), runs(rec["candidates"][name])]


def _cell_gain(layer: dict) -> tuple[str, str]:
    calibration = (layer["calibration"] or {}).get("measured")
    if not calibration:
        return "", ""
    gain = "-" if calibration["gain"] is None else f"{calibration['gain']:.4g}"
    moment = compact(calibration["second_moment"]) + ("" if calibration["reached"] else "*")
    return gain, moment


def _layers(rec: dict, width: int) -> list[Table]:
    calibrated = rec["calibrated"]
    head = [("#", "right"), ("layer", "left"), ("activation", "left"), ("now", "left"), ("rule", "left"),
            ("best", "left"), ("agree", "left")]
    evidence = [("rule sig", "right"), ("best sig", "right")] + ([("gain", "right"), ("E[y²]", "right")] if calibrated else [])
    rows = []
    for layer in rec["layers"]:
        agree = Text("yes" if layer["agree"] else "no", AGREE_STYLE[layer["agree"]])
        cells = [str(layer["index"]), layer["name"], layer["activation"], layer["current"], "/".join(layer["rule_options"]),
                 Text(layer["measured"], "bold") if not layer["agree"] else layer["measured"], agree,
                 ratio(layer["rule_signal"]), ratio(layer["measured_signal"])]
        if calibrated:
            cells += list(_cell_gain(layer))
        rows.append(cells)
    wide = _table("layers", head + evidence)
    for cells in rows:
        wide.add_row(*cells)
    if natural_width(wide) <= width:
        return [wide]
    names = _table("layers", head)
    figures = _table("evidence", [("#", "right"), ("layer", "left")] + evidence)
    for cells in rows:
        names.add_row(*cells[:7])
        figures.add_row(cells[0], cells[1], *cells[7:])
    return [names, figures]


def _reasons(rec: dict) -> list[Text]:
    lines = []
    for group in _groups(rec["layers"], lambda layer: None if layer["agree"] else
                         (layer["activation"], layer["rule"], layer["measured"])):
        worst = max(group, key=lambda layer: abs(math.log10(layer["rule_signal"]))
                    if 0 < layer["rule_signal"] < math.inf else math.inf)
        lines.append(Text.assemble((_span(group), "bold"), f": rule {worst['rule']}, measured {worst['measured']}"
                                   + (f" (figures of {worst['name']})" if len(group) > 1 else "")))
        lines.append(Text(f"  {worst['reason']}"))
    return lines


def _calibration_notes(rec: dict) -> list[Text]:
    lines = []
    for group in _groups(rec["layers"], lambda layer: ((layer["calibration"] or {}).get("measured") or {}).get("note")):
        note = group[0]["calibration"]["measured"]["note"]
        lines.append(Text.assemble("* ", (_span(group), "bold"), f": {note}"))
    return lines


def render(rec: dict, color: bool = False, width: int = 80) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color, highlight=False, emoji=False,
                      markup=False, color_system="standard" if color else None, soft_wrap=False)
    console.print(Text.assemble(("initdiag recommend ", "bold"), (rec["spec"], "bold"), f" ({rec['name']})",
                                f" · seed {rec['seed']} · batch {rec['batch']} · {len(rec['ranking'])} candidates"))
    console.print()
    for line in _summary(rec):
        console.print(line)
    console.print()
    for table in _candidates(rec, width) + _layers(rec, width):
        console.print(table)
        console.print()
    reasons = _reasons(rec)
    if reasons:
        console.print(Text("where they differ", "bold"))
        for line in reasons:
            console.print(line)
        console.print()
    if rec["selection"]:
        console.print(Text(f"choice: {rec['selection']}"))
        console.print()
    if rec["calibrated"]:
        console.print(Text(f"calibrated (LSUV): each layer's gain brings its E[y²] (the logits' for softmax) to "
                           f"{rec['target']:g} within {rec['calibration_tolerance']:.0%}, from the first layer on"))
        for line in _calibration_notes(rec):
            console.print(line)
        console.print()
    console.print(Text("rule: the rules-of-thumb scheme for the activation; best: the measured best's; sig: the "
                       "layer's second moment (E[y²], the logits' for softmax) over the input's, under the rules "
                       "of thumb and under the measured best; drift: last layer's over the first's; grad: first "
                       "layer's weight-gradient RMS over the last's."))
    return out.getvalue()
