"""The text report: a header, a per-layer table, the findings with their hints, a verdict.

It must stay whole in an 80-column CI log: numbers use compact formats, every column
folds instead of cutting to an ellipsis, and when one table would not fit it is split
into a configuration table and a statistics table.
"""

from __future__ import annotations

import io
import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from initdiag.checks import CHECKS
from initdiag.numbers import compact as number

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
VERDICT_STYLE = {"failing": "bold red", "warning": "bold yellow", "healthy": "bold green"}
FLAG = {code: entry.flag for code, entry in CHECKS.items()}  # the label beside a layer, declared by its check


def percent(fraction) -> str:
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return "-"
    value = 100 * fraction
    if value == 0:
        return "0"
    return f"{value:.0f}" if value >= 1 else f"{value:.1f}" if value >= 0.1 else "<0.1"


NAME_WHOLE = 28  # the longest layer name kept on one line at 80 columns (the other columns fold around it)


def _table(title: str | None, columns: list[tuple[str, str]]) -> Table:
    """Columns fold rather than cut (a minimum width would make rich crop the table's right edge)."""
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    for header, justify in columns:
        table.add_column(header, justify=justify, overflow="fold")
    return table


def _flags(report: dict) -> dict:
    flags: dict[str, list] = {}
    for finding in report["findings"]:
        if finding["layer"] is not None and not finding.get("suppressed"):
            style = SEVERITY_STYLE[finding["severity"]]
            flags.setdefault(finding["layer"], []).append(Text(FLAG.get(finding["code"], finding["code"]), style=style))
    return {name: Text(" ").join(items) for name, items in flags.items()}


THEORY_COLUMNS = [("q theory", "right"), ("chi", "right")]


def _theory_cells(layer: dict) -> list[str]:
    return [number(layer.get("preact_var_theory")), number(layer.get("chi"))]


def _figure(layer: dict, key: str) -> str:
    """A figure, as mean±spread (one significant digit) when the report combines seeds (`--seeds`)."""
    spread = (layer.get("spread") or {}).get(key)
    if spread is None or layer.get(key) is None:
        return number(layer.get(key))
    return f"{number(layer[key])}±{number(spread, digits=1)}"


def _wide(report: dict, flags: dict, theory: bool) -> Table:
    table = _table(None, [
        ("#", "right"), ("layer", "left"), ("units", "right"), ("activation", "left"), ("init", "left"),
        ("w std", "right"), ("pre var", "right")] + (THEORY_COLUMNS if theory else []) + [
        ("act var", "right"), ("grad var", "right"),
        ("w-grad var", "right"), ("dead%", "right"), ("sat%", "right"), ("sym%", "right"), ("flags", "left"),
    ])
    for layer in report["layers"]:
        table.add_row(
            str(layer["index"]), layer["name"], str(layer.get("units") or layer["fan_out"]), layer["activation"],
            layer["init"] or "-",
            number(layer["weight_std"]), _figure(layer, "preact_var"), *(_theory_cells(layer) if theory else []),
            _figure(layer, "act_var"), _figure(layer, "grad_var"), _figure(layer, "weight_grad_var"),
            percent(layer["dead_fraction"]), percent(layer["saturation"]), percent(layer["symmetry"]),
            flags.get(layer["name"], ""),
        )
    return table


def natural_width(table: Table) -> int:
    """The width the table needs with no cell wrapped (cheaper than rich's Measurement)."""
    widths = [
        max([len(column.header)] + [len(cell.plain if isinstance(cell, Text) else str(cell)) for cell in column.cells])
        for column in table.columns
    ]
    return sum(widths) + 2 * (len(widths) - 1)


def _fans(layer: dict) -> str:
    return f"{layer['fan_in']}→{layer['fan_out']}" if layer["fan_in"] is not None else "-"


def _split_by_seed(measured: Table, width: int) -> list[Table]:
    """The statistics table, or, when mean±spread cells (--seeds) make it wider than `width`, its variance
    columns and its unit columns as two tables."""
    if natural_width(measured) <= width:
        return [measured]
    variances = _table("statistics (mean±sd over seeds)", [(c.header, c.justify) for c in measured.columns[:5]])
    units = _table("units", [(c.header, c.justify) for c in measured.columns[:1] + measured.columns[5:]])
    for row in zip(*(column.cells for column in measured.columns)):
        variances.add_row(*row[:5])
        units.add_row(row[0], *row[5:])
    return [variances, units]


def _split(report: dict, flags: dict, theory: bool, width: int = 80) -> list[Table]:
    config = _table("layers", [
        ("#", "right"), ("layer", "left"), ("fans", "right"), ("activation", "left"), ("init", "left"),
        ("w std", "right"), ("expected", "right"),
    ])
    measured = _table("statistics", [
        ("#", "right"), ("pre var", "right"), ("act var", "right"), ("grad var", "right"), ("w-grad var", "right"),
        ("dead%", "right"), ("sat%", "right"), ("sym%", "right"), ("flags", "left"),
    ])
    longest = max((len(layer["name"]) for layer in report["layers"]), default=0)
    if longest <= NAME_WHOLE:  # whole names (torchvision's 'layer2.0.downsample.0'); the init column folds instead
        config.columns[1].no_wrap = True
    for layer in report["layers"]:
        config.add_row(
            str(layer["index"]), layer["name"], _fans(layer), layer["activation"], layer["init"] or "-", number(layer["weight_std"]), number(layer["weight_std_expected"]),
        )
        measured.add_row(
            str(layer["index"]), _figure(layer, "preact_var"), _figure(layer, "act_var"), _figure(layer, "grad_var"),
            _figure(layer, "weight_grad_var"), percent(layer["dead_fraction"]), percent(layer["saturation"]),
            percent(layer["symmetry"]), flags.get(layer["name"], ""),
        )
    if "seeds" in report:
        measured = _split_by_seed(measured, width)
    else:
        measured = [measured]
    if not theory:
        return [config, *measured]
    predicted = _table("mean-field theory", [("#", "right"), ("pre var", "right")] + THEORY_COLUMNS)
    for layer in report["layers"]:
        predicted.add_row(str(layer["index"]), _figure(layer, "preact_var"), *_theory_cells(layer))
    return [config, *measured, predicted]


def seeds_label(seeds: list) -> str:
    """'seeds 0-4 (5)' for consecutive seeds, else 'seeds 0, 2, 7 (3)'."""
    consecutive = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    shown = f"{seeds[0]}-{seeds[-1]}" if consecutive else ", ".join(str(seed) for seed in seeds)
    return f"seeds {shown} ({len(seeds)})"


def _header(report: dict) -> Text:
    scheme = f" · scheme {report['scheme']}" if report["scheme"] else ""
    seeds = report.get("seeds") or [report["seed"]]
    seed = seeds_label(seeds) if len(seeds) > 1 else f"seed {report['seed']}"
    return Text.assemble(
        ("initdiag ", "bold"), (report["spec"], "bold"), f" ({report['name']})",
        f" · {seed} · batch {report['batch']} · {report['dtype']} · loss {report['loss']}"
        f" · input {report['input_distribution']}{scheme}",
    )


def _findings(report: dict, suppressed: bool) -> list[Text]:
    lines = []
    for finding in report["findings"]:
        if finding.get("suppressed") and not suppressed:
            continue
        mark = f" (suppressed{': ' + finding['reason'] if finding.get('reason') else ''})" if finding.get("suppressed") else ""
        line = Text.assemble((f"{finding['severity']}{mark}", SEVERITY_STYLE[finding["severity"]]), " ",
                             (finding["code"], "bold"), ": ", finding["message"])
        lines.append(line)
        if finding["hint"]:
            lines.append(Text.assemble("  hint: ", (finding["hint"], "dim")))
    return lines


def _unstable(report: dict, suppressed: bool) -> Text | None:
    """One line naming the findings that some seeds had and others not (`--seeds`): never counted."""
    by_code: dict[str, list[str]] = {}
    for finding in report.get("unstable_findings") or ():
        if suppressed or not finding.get("suppressed"):
            seeds = f"{'seed' if len(finding['seeds']) == 1 else 'seeds'} {', '.join(str(s) for s in finding['seeds'])}"
            seeds += ", suppressed" if finding.get("suppressed") else ""
            by_code.setdefault(finding["code"], []).append(f"{finding['layer']} ({seeds})" if finding.get("layer") else f"({seeds})")
    if not by_code:
        return None
    return Text.assemble(("not in every seed, not counted: ", "dim"),
                         "; ".join(f"{code} {', '.join(places)}" for code, places in by_code.items()))


def _verdict(report: dict) -> Text:
    counts = {severity: 0 for severity in SEVERITY_STYLE}
    hidden = 0
    for finding in report["findings"]:
        if finding.get("suppressed"):
            hidden += 1
        else:
            counts[finding["severity"]] += 1
    summary = ", ".join(f"{count} {severity}{'s' if count != 1 and severity != 'info' else ''}" for severity, count in counts.items() if count)
    if hidden:
        summary += f"{', ' if summary else ''}{hidden} suppressed"
    return Text.assemble("verdict: ", (report["verdict"], VERDICT_STYLE[report["verdict"]]), f" ({summary})" if summary else "")


def _probes(report: dict) -> Text | None:
    """One line on the probes: the input's contrast left at the readout's features, and the inputs behind dead%."""
    contrast, inputs = report.get("input_contrast"), report.get("dead_unit_inputs")
    parts = []
    if contrast and contrast.get("contrast") is not None:
        layer = next((l["name"] for l in report["layers"] if l.get("index") == contrast.get("layer_index")), "the readout")
        parts.append(f"{layer} reads features keeping {number(contrast['contrast'])} ±{number(contrast['standard_error'])} "
                     f"of the input's near/far contrast ({contrast['samples']} pairs)")
    if inputs:
        parts.append(f"dead% over {inputs} inputs")
    return Text("; ".join(parts)) if parts else None


def render(report: dict, color: bool = False, width: int = 80, theory: bool = False, suppressed: bool = False) -> str:
    """`suppressed`: also list the findings an `ignore:` suppressed (always marked)."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color, highlight=False, emoji=False, markup=False,
                      color_system="standard" if color else None, soft_wrap=False)
    flags = _flags(report)
    console.print(_header(report))
    console.print()
    wide = _wide(report, flags, theory)
    fits = natural_width(wide) <= width
    if fits:
        console.print(wide)
    else:
        for table in _split(report, flags, theory, width):
            console.print(table)
            console.print()
    probes = _probes(report)
    if probes is not None:
        if fits:  # the split tables end with a blank line of their own
            console.print()
        console.print(probes)
    if any(suppressed or not finding.get("suppressed") for finding in report["findings"]):
        console.print()
        for line in _findings(report, suppressed):
            console.print(line)
    unstable = _unstable(report, suppressed)
    if unstable is not None:
        console.print()
        console.print(unstable)
    console.print()
    console.print(_verdict(report))
    return out.getvalue()
