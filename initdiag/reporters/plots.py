"""Pictures of a check report and of a compare report: PNG, SVG, PDF (whatever matplotlib writes).

Like every reporter, these only draw the data they are given: the figures show the report's
numbers, with nothing computed but trivial transforms (second moment = variance + mean², percent,
log scale). Values that overflowed (inf, NaN, or null in a report read back from JSON) are left
out of the lines; exact zeros, which a log scale cannot show, are drawn as open triangles on the
panel's bottom edge; the legend names the layers of both.

matplotlib is imported inside `plot_check` and `plot_compare` only: `initdiag check` without
`--plot` never pays for it. The figures are built on `matplotlib.figure.Figure` with the Agg
canvas, never pyplot, so no display and no global backend state are involved.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from pathlib import Path

from initdiag.checks import CHECKS

# One colour per quantity, the same in every panel (the histograms use the activation colour).
COLORS = {
    "preact": "#9467bd",  # purple: pre-activation x·W + b
    "act": "#1f77b4",  # blue: the layer's output
    "second_moment": "#0b3d66",  # dark blue: the output's E[y²], what the drift check measures
    "grad": "#17becf",  # teal: dLoss/d(output)
    "weight_grad": "#8c564b",  # brown: dLoss/dW
    "dead": "#4d4d4d",
    "saturated": "#bcbd22",
    "duplicated": "#e377c2",
    "reference": "#555555",
    "band": "#2ca02c",
}
SEVERITY_COLORS = {"error": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
VERDICT_COLORS = {"failing": "#d62728", "warning": "#ff7f0e", "healthy": "#2ca02c"}
NOTE_COLOR = "#a14d00"

# Where a finding is marked, and its short label there (the text reporter's flags), as its check declares.
FINDING_PANELS = {code: (entry.panel, entry.flag) for code, entry in CHECKS.items() if entry.panel}

# Scheme colours for compare plots: a scheme keeps its colour from run to run (see _scheme_styles).
SCHEME_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#b8860b",
)
# The usual schemes own a palette slot, so they never collide with each other; any other name
# (and a scheme with parameters, e.g. normal(std=0.01)) starts where its CRC-32 points.
SCHEME_SLOTS = {
    "xavier": 0, "relu": 1, "lecun_normal": 2, "normal": 3, "orthogonal": 4, "relu_uniform": 5,
    "uniform": 6, "torch_default": 7, "lecun_uniform": 8, "xavier_uniform": 9, "zero": 10, "identity": 11,
}
SCHEME_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
SCHEME_LINESTYLES = ("-", "--", "-.", ":")

MAX_HISTOGRAMS = 12  # histogram panels at most; more layers get an evenly spaced subset
MAX_NAMED_LAYERS = 16  # layer names on the x axis up to this many layers, else indices
MAX_FINDINGS_LISTED = 10  # finding lines under a check figure
LEGEND_WIDTH = 40  # characters per legend line before it wraps
DPI = 100


# --------------------------------------------------------------------------- the public API


def plot_check(report: dict, run, path) -> None:
    """Draw one check report, with per-layer output histograms, to `path` (format from its extension).

    `report` is `initdiag.report.build(...)`'s dict (or its JSON read back); `run` is its statistics,
    `propagate.run(..., histogram_bins=N)` (stats.RunStats): each layer's signal second moment, and
    its histograms: per layer, (counts, edges) of its outputs (empty: the histogram panel says so). Raises ValueError for an extension matplotlib
    cannot write, before drawing anything; the file is written atomically.
    """
    fmt = check_path(path)
    from matplotlib.figure import Figure

    layers = report.get("layers") or []
    findings = report.get("findings") or []
    names = [str(layer.get("name", i)) for i, layer in enumerate(layers)]
    listed = _finding_lines(findings)
    line_height = 15 / 72  # inches per finding line
    top_height, bottom_height = 11.0, line_height * (len(listed) + 1.3) + 0.15
    fig = Figure(figsize=(18, top_height + bottom_height), dpi=DPI, layout="constrained")
    fig.suptitle(_check_title(report), fontsize=14, fontweight="bold",
                 bbox={"boxstyle": "round,pad=0.4", "facecolor": "white",
                       "edgecolor": VERDICT_COLORS.get(report.get("verdict"), "#555555"), "linewidth": 2.5})
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_height, bottom_height])
    left, right = top.subfigures(1, 2, width_ratios=[1.25, 1], wspace=0.02)

    signal_ax, gradient_ax, units_ax = left.subplots(3, 1, sharex=True)
    panels = {"signal": signal_ax, "gradient": gradient_ax, "units": units_ax}
    rows = _mark_findings(panels, findings, names)
    _signal_panel(signal_ax, report, run, layers, names, rows.get("signal", 0))
    _gradient_panel(gradient_ax, layers, names, rows.get("gradient", 0))
    _units_panel(units_ax, report, layers, names, rows.get("units", 0))
    _layer_axis(units_ax, names)

    _histogram_grid(right, layers, run.histograms)
    _findings_list(bottom, listed, line_height)
    _save(fig, path, fmt)


def plot_compare(compare: dict, runs: dict, path) -> None:
    """Draw a compare report (one line per scheme, legend best first) to `path` (format from its extension).

    `compare` is `{"initdiag_version", "spec", "seed", "reports": [check reports, each with
    "scheme" set], "ranking": [scheme names, best first]}`. Raises ValueError for an extension
    matplotlib cannot write, before drawing anything; the file is written atomically. `runs` maps each
    scheme to its statistics (stats.RunStats), whose signal second moments are drawn.
    """
    fmt = check_path(path)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    reports = _ranked(compare)
    labels = [_scheme_label(rep) for rep in reports]
    styles = _scheme_styles(labels)
    first = reports[0] if reports else {}
    names = [str(layer.get("name", i)) for i, layer in enumerate(first.get("layers") or [])]

    fig = Figure(figsize=(17, 7.5), dpi=DPI, layout="constrained")
    # Left-aligned, so the legend in the top right corner never runs into it.
    fig.suptitle(_compare_title(compare, first, len(reports)), fontsize=14, fontweight="bold", x=0.01, ha="left")
    signal_ax, gradient_ax = fig.subplots(1, 2)
    handles, zeros_seen, bad_lines = [], False, []
    for rank, (rep, label) in enumerate(zip(reports, labels), 1):
        color, marker, linestyle = styles[label]
        style = {"color": color, "marker": marker, "linestyle": linestyle, "linewidth": 2, "markersize": 6,
                 "zorder": 3 + (len(reports) - rank) / 100}  # where lines coincide, the better scheme is on top
        rep_layers = rep.get("layers") or []
        rep_names = [str(layer.get("name", i)) for i, layer in enumerate(rep_layers)]
        line, zeros, bad = _log_line(signal_ax, _signals(runs.get(rep.get("scheme"))), style)
        _, grad_zeros, grad_bad = _log_line(gradient_ax, [_value(layer.get("grad_var")) for layer in rep_layers], style)
        zeros_seen = zeros_seen or bool(zeros or grad_zeros)
        for what, indices in (("E[y²]", bad), ("gradient", grad_bad)):
            if indices:
                bad_lines.append(f"{label}: {what} inf/NaN at {_spans([rep_names[i] for i in indices])}")
        line.set_label(_wrap(f"{rank}. {label}  ({rep.get('verdict', '?')})"))
        handles.append(line)

    reference = _band(signal_ax, first, runs.get(first.get("scheme")))
    signal_ax.set_title("activation second moment through depth", fontsize=12, loc="left")
    signal_ax.set_ylabel("E[y²] = var + mean² of each layer's output\n(logits for softmax; log scale)")
    gradient_ax.set_title("gradient through depth (backward pass)", fontsize=12, loc="left")
    gradient_ax.set_ylabel("variance of dLoss/d(layer output) (log scale)")
    for ax in (signal_ax, gradient_ax):
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        _layer_axis(ax, names)
        _empty_log_axis(ax)
    notes = []
    if zeros_seen:
        notes.append((Line2D([], [], linestyle="none", marker="v", markersize=8, markerfacecolor="white",
                             markeredgecolor="#333333"), _wrap("exactly 0: drawn on the bottom edge (a log scale cannot show 0)")))
    if bad_lines:
        shown = bad_lines[:4] + ([f"{len(bad_lines) - 4} more"] if len(bad_lines) > 4 else [])
        notes.append((Line2D([], [], linestyle="none", marker="x", markersize=7, color=NOTE_COLOR),
                      _wrap("inf/NaN (overflow), not drawn: " + "; ".join(shown), 48)))
    if not reports:
        signal_ax.text(0.5, 0.5, "no reports to compare", transform=signal_ax.transAxes, ha="center", va="center",
                       fontsize=11, color="#555555")
        _save(fig, path, fmt)
        return
    legend = fig.legend(handles=handles + reference + [h for h, _ in notes],
                        labels=[h.get_label() for h in handles + reference] + [text for _, text in notes],
                        loc="outside right upper", fontsize=10, title="scheme (verdict), best first",
                        title_fontsize=10, alignment="left", frameon=False, labelspacing=0.6)
    for text in legend.get_texts()[len(legend.get_texts()) - len(notes):]:
        text.set_color(NOTE_COLOR)
    _save(fig, path, fmt)


# --------------------------------------------------------------------------- check panels


def _signal_panel(ax, report: dict, run, layers: list, names: list, marker_rows: int) -> None:
    series = (
        ("pre-activation variance", "preact", "pre-act var", [_value(layer.get("preact_var")) for layer in layers],
         {"linestyle": "--", "marker": "o", "markersize": 4}),
        ("activation (output) variance", "act", "act var", [_value(layer.get("act_var")) for layer in layers],
         {"linestyle": "-", "marker": "o", "markersize": 5}),
        ("activation E[y²] = var + mean², what the drift check measures (logits for softmax)", "second_moment", "E[y²]",
         _signals(run), {"linestyle": ":", "marker": "s", "markersize": 4}),
    )
    measured = _log_series(ax, series)
    reference = _band(ax, report, run)
    ax.set_yscale("log")
    ax.set_ylabel("variance (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    _empty_log_axis(ax)
    _title(ax, "signal through depth (forward pass)", marker_rows)
    _legend(ax, names, measured, extra=reference)


def _gradient_panel(ax, layers: list, names: list, marker_rows: int) -> None:
    series = (
        ("variance of dLoss/d(layer output)", "grad", "dLoss/dy", [_value(layer.get("grad_var")) for layer in layers],
         {"linestyle": "-", "marker": "o", "markersize": 5}),
        ("variance of dLoss/dW (weight gradient)", "weight_grad", "dLoss/dW",
         # layers without weights (pooling, flatten) have no dLoss/dW: None leaves a gap, not an overflow note
         [_value(layer.get("weight_grad_var")) if layer.get("init") is not None else None for layer in layers],
         {"linestyle": "--", "marker": "s", "markersize": 4}),
    )
    measured = _log_series(ax, series)
    ax.set_yscale("log")
    ax.set_ylabel("variance (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    if _empty_log_axis(ax):
        ax.text(0.5, 0.5, "no positive finite gradient variance to draw", transform=ax.transAxes,
                ha="center", va="center", fontsize=11, color="#555555")
    _title(ax, "gradients through depth (backward pass)", marker_rows)
    _legend(ax, names, measured)


def _units_panel(ax, report: dict, layers: list, names: list, marker_rows: int) -> None:
    metrics = (
        ("dead units (output 0 for every sample)", "dead", "dead_fraction"),
        ("saturated outputs", "saturated", "saturation"),
        ("duplicated units (symmetry)", "duplicated", "symmetry"),
    )
    width = 0.8 / len(metrics)
    bad_notes = []
    for k, (label, color, key) in enumerate(metrics):
        values = [_value(layer.get(key)) for layer in layers]
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        ax.bar([i + (k - 1) * width for i in range(len(values))], [100 * v if math.isfinite(v) else 0.0 for v in values],
               width=width, color=COLORS[color], label=_wrap(label), zorder=2)
        if bad:
            bad_notes.append(f"{label.split(' (')[0]}: {_spans([names[i] for i in bad])}")
    thresholds = report.get("thresholds") or {}
    lines: dict = {}
    for level, linestyle in (("warning", "--"), ("error", ":")):
        for prefix, shown in (("dead", "dead"), ("saturation", "saturated")):
            value = _value(thresholds.get(f"{prefix}_{level}"))
            if math.isfinite(value) and 0 <= value <= 1:
                lines.setdefault((100 * value, level, linestyle), []).append(shown)
    for (value, level, linestyle), which in lines.items():
        ax.axhline(value, color=SEVERITY_COLORS[level], linestyle=linestyle, linewidth=1.2, alpha=0.8, zorder=1,
                   label=_wrap(f"{' & '.join(which)}: {level} above {value:g}%"))
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of units\n(saturated: % of outputs)")
    ax.grid(True, axis="y", alpha=0.3)
    _title(ax, "units not learning: dead, saturated, duplicated", marker_rows)
    handles, labels = ax.get_legend_handles_labels()
    if bad_notes:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], linestyle="none"))
        labels.append(_wrap("not finite, not drawn: " + "; ".join(bad_notes)))
    _place_legend(ax, handles, labels)


def _log_series(ax, series) -> list:
    """Draw each (label, colour, short name, values, style) on a log axis; (short name, zeros, non-finite) per series."""
    measured = []
    for label, color, short, values, style in series:
        line, zeros, bad = _log_line(ax, values, {"color": COLORS[color], "linewidth": 1.8, **style})
        line.set_label(_wrap(label))
        measured.append((short, COLORS[color], zeros, bad))
    return measured


def _legend(ax, names: list, measured: list, extra: list = ()) -> None:
    """The panel's legend beside it: its lines, the reference artists, then what could not be drawn."""
    from matplotlib.lines import Line2D

    handles = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
    handles += [h for h in extra if h not in handles]
    labels = [h.get_label() for h in handles]
    for kind in ("zero", "bad"):
        groups: dict = {}  # series with the same layers share one line
        for short, color, zeros, bad in measured:
            indices = tuple(zeros if kind == "zero" else bad)
            if indices:
                groups.setdefault(indices, []).append((short, color))
        for indices, members in groups.items():
            which = ", ".join(short for short, _ in members)
            where = _spans([names[i] for i in indices])
            if kind == "zero":
                handles.append(Line2D([], [], linestyle="none", marker="v", markersize=8, markerfacecolor="white",
                                      markeredgecolor=members[-1][1], markeredgewidth=1.5))  # drawn last, on top
                labels.append(_wrap(f"{which} exactly 0 at {where}: drawn on the bottom edge (log scale)"))
            else:
                handles.append(Line2D([], [], linestyle="none", marker="x", markersize=7, color=NOTE_COLOR))
                labels.append(_wrap(f"{which} inf/NaN (overflow) at {where}: not drawn"))
    _place_legend(ax, handles, labels)


def _place_legend(ax, handles, labels) -> None:
    legend = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.015, 1.0), fontsize=9, frameon=False,
                       borderaxespad=0, labelspacing=0.6)
    for text in legend.get_texts():
        if "inf/NaN" in text.get_text() or "not finite" in text.get_text() or "exactly 0" in text.get_text():
            text.set_color(NOTE_COLOR)


def _band(ax, report: dict, run) -> list:
    """The healthy band (input E[x²] ×/÷ drift_warning, what the drift check allows) and the input's variance;
    E[x²] as the statistics stage computed it (RunStats.input_second_moment)."""
    var = _value(report.get("input_var"))
    warning = _value((report.get("thresholds") or {}).get("drift_warning", 10.0))
    second = _value(run.input_second_moment) if run is not None else math.nan
    artists = []
    if math.isfinite(second) and second > 0 and math.isfinite(warning) and warning > 0:
        artists.append(ax.axhspan(second / warning, second * warning, color=COLORS["band"], alpha=0.12, zorder=0,
                                  linewidth=0, label=_wrap(f"healthy band: input E[x²] ×/÷ {warning:g} (drift_warning)")))
    if math.isfinite(var) and var > 0:
        artists.append(ax.axhline(var, color=COLORS["reference"], linestyle="-.", linewidth=1.2, zorder=1,
                                  label=f"input variance ({var:.3g})"))
    return artists


def _histogram_grid(subfig, layers: list, histograms) -> None:
    from matplotlib.ticker import MaxNLocator

    histograms = list(histograms or [])
    n = len(layers)
    if not histograms or len(histograms) != n:
        ax = subfig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no activation histograms were given", ha="center", va="center", fontsize=11,
                color="#555555", transform=ax.transAxes)
        subfig.suptitle("activation histograms", fontsize=12)
        return
    chosen = _subset(n, MAX_HISTOGRAMS)
    columns = 3 if len(chosen) > 4 else 2 if len(chosen) > 1 else 1
    rows = max(-(-len(chosen) // columns), 2 if len(chosen) > 1 else 1)
    # A fixed grid, left out of the constrained layout: these small panels have short labels of
    # known sizes, and laying them out would double the time of the whole figure.
    axes = subfig.subplots(rows, columns, squeeze=False, gridspec_kw={
        "left": 0.08, "right": 0.985, "bottom": 0.055, "top": 0.93, "wspace": 0.32, "hspace": 0.42})
    flat = [ax for row in axes for ax in row]
    for ax in flat:
        ax.set_in_layout(False)
    for ax in flat[len(chosen):]:
        ax.set_axis_off()
    for slot, (ax, i) in enumerate(zip(flat, chosen)):
        counts, edges = histograms[i] if histograms[i] is not None else ([], [])
        layer = layers[i]
        ax.set_title(_clip(f"{layer.get('name', i)} · {layer.get('activation', '?')}", 34), fontsize=10)
        total = sum(counts) if counts else 0
        if total and len(edges) == len(counts) + 1:
            percent = [100 * c / total for c in counts]
            ax.stairs(percent, edges, fill=True, color=COLORS["act"], alpha=0.75, linewidth=0)
            ax.set_ylim(0, max(percent) * 1.08)
            ax.grid(True, axis="y", alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        else:
            ax.text(0.5, 0.5, "no finite outputs\n(overflow)", ha="center", va="center", fontsize=10,
                    color=SEVERITY_COLORS["error"], transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.tick_params(labelsize=8)
        ax.xaxis.get_offset_text().set_fontsize(8)
        if slot % columns == 0:
            ax.set_ylabel("% of outputs", fontsize=9)
        if slot + columns >= len(chosen):  # nothing drawn below this one
            ax.set_xlabel("output value", fontsize=9)
    shown = (f"all {n} layers" if n > 1 else "1 layer") if len(chosen) == n else f"{len(chosen)} of {n} layers, evenly spaced"
    subfig.suptitle(f"activation histograms: each layer's outputs over the batch ({shown})", fontsize=12)


def _mark_findings(panels: dict, findings: list, names: list) -> dict:
    """A coloured band at the layer of each error or warning and its short label above its panel.

    Labels that would overlap a neighbour's move up a row; returns the rows used per panel.
    """
    index = {name: i for i, name in enumerate(names)}
    marks: dict = {}
    for finding in findings:
        where = FINDING_PANELS.get(finding.get("code"))
        i = index.get(finding.get("layer"))
        if where is None or i is None or finding.get("severity") not in ("error", "warning"):
            continue
        panel, short = where
        if finding.get("code") == "overflow" and "backward" in (finding.get("message") or ""):
            panel = "gradient"
        marks.setdefault(panel, {}).setdefault(i, []).append((finding["severity"], short))
    crowded = len(names) > MAX_NAMED_LAYERS
    points_per_layer = 470 / max(len(names), 1)  # about the panel's width in points, per layer
    rows_used = {}
    for panel, by_layer in marks.items():
        ax = panels[panel]
        placed = []  # (layer, row, half width in points)
        for i in sorted(by_layer):
            items = by_layer[i]
            color = SEVERITY_COLORS["error" if any(severity == "error" for severity, _ in items) else "warning"]
            ax.axvspan(i - 0.45, i + 0.45, color=color, alpha=0.13, zorder=0, linewidth=0)
            label = "▼" if crowded else "▼ " + ", ".join(dict.fromkeys(short for _, short in items))
            half = 2.6 * len(label)
            row = 0
            while any(r == row and (i - j) * points_per_layer < half + h + 4 for j, r, h in placed):
                row += 1
            placed.append((i, row, half))
            ax.annotate(label, xy=(i, 1), xycoords=ax.get_xaxis_transform(), xytext=(0, 2 + 11 * row),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8.5, fontweight="bold",
                        color=color, annotation_clip=False)
        rows_used[panel] = 1 + max(row for _, row, _ in placed)
    return rows_used


def _title(ax, title: str, marker_rows: int) -> None:
    ax.set_title(title, fontsize=12, loc="left", pad=6 + 11 * marker_rows)


def _finding_lines(findings: list) -> list:
    """(colour, text) per finding, most severe first as the report orders them; a tail line when cut."""
    lines = []
    for finding in findings[:MAX_FINDINGS_LISTED]:
        severity = finding.get("severity", "info")
        message, layer = finding.get("message") or "", finding.get("layer")
        prefix = f"{layer}: " if layer and not message.startswith(str(layer)) else ""
        text = f"{severity.upper():8s} {finding.get('code', '?')}  —  {prefix}{message}"
        lines.append((SEVERITY_COLORS.get(severity, "#333333"), _clip(text, 190)))
    if len(findings) > MAX_FINDINGS_LISTED:
        lines.append(("#555555", f"… and {len(findings) - MAX_FINDINGS_LISTED} more findings (see the text or JSON report)"))
    if not findings:
        lines.append((VERDICT_COLORS["healthy"], "none"))
    return lines


def _findings_list(subfig, lines: list, line_height: float) -> None:
    ax = subfig.subplots()
    ax.set_axis_off()
    ax.annotate("findings (▼ marks the layer of an error or warning in the panels above):",
                xy=(0, 1), xycoords="axes fraction", va="top", ha="left", fontsize=10, fontweight="bold")
    for k, (color, text) in enumerate(lines, 1):
        ax.annotate(text, xy=(0, 1), xycoords="axes fraction", xytext=(12, -k * line_height * 72),
                    textcoords="offset points", va="top", ha="left", fontsize=9.5, color=color, family="monospace")


# --------------------------------------------------------------------------- shared pieces


def _log_line(ax, values: list, style: dict):
    """Draw positive finite values as a line (gaps elsewhere); zeros as open triangles on the bottom edge.

    Returns (line, indices of zeros, indices of non-finite values).
    """
    ys = [v if v is not None and _positive(v) else math.nan for v in values]  # None: the layer has no such value
    (line,) = ax.plot(range(len(values)), ys, **{"zorder": 3, **style})
    zeros = [i for i, v in enumerate(values) if v is not None and math.isfinite(v) and v <= 0]
    bad = [i for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
    if zeros:
        ax.plot(zeros, [0.0] * len(zeros), transform=ax.get_xaxis_transform(), linestyle="none", marker="v",
                markersize=8, markerfacecolor="white", markeredgecolor=style.get("color"), markeredgewidth=1.5,
                clip_on=False, zorder=4, label="_zeros")
    return line, zeros, bad


def _empty_log_axis(ax) -> bool:
    """Whether no line of `ax` has a positive finite value; then fixed limits (matplotlib would warn)."""
    drawn = any(_positive(y) for line in ax.get_lines() if line.get_transform() is ax.transData for y in line.get_ydata())
    if not drawn and not ax.patches:
        ax.set_ylim(1e-3, 1e3)
    return not drawn


def _layer_axis(ax, names: list) -> None:
    n = len(names)
    if n:
        ax.set_xlim(-0.6, n - 0.4)
    if n <= MAX_NAMED_LAYERS:
        ax.set_xticks(range(n), names, rotation=30 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=9)
        ax.set_xlabel("layer (input → output)")
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
        ax.set_xlabel(f"layer index (0 … {n - 1}, input → output)")


def _check_title(report: dict) -> str:
    layers = report.get("layers") or []
    if report.get("scheme"):
        init = f"--scheme {report['scheme']}"
    else:
        inits = list(dict.fromkeys(str(layer.get("init")) for layer in layers if layer.get("init") is not None))
        init = "init " + " / ".join(inits) if inits else "init ?"
    name, spec = report.get("name", "?"), report.get("spec", "")
    verdict = str(report.get("verdict", "?")).upper()
    details = " · ".join(str(part) for part in (
        f"seed {report.get('seed')}", f"batch {report.get('batch')}", report.get("dtype"), f"loss {report.get('loss')}",
    ))
    return f"initdiag check: {name} ({spec}) · {init} · verdict: {verdict}\n{_layers(len(layers))} · {details}"


def _compare_title(compare: dict, first: dict, count: int) -> str:
    name = first.get("name", "?")
    spec = compare.get("spec", first.get("spec", ""))
    seed = compare.get("seed", first.get("seed"))
    return f"initdiag compare: {name} ({spec}) · seed {seed}\n{count} schemes, each replacing every layer's init"


def _ranked(compare: dict) -> list:
    """The reports in ranking order, best first; reports the ranking does not name keep their order after."""
    reports = list(compare.get("reports") or [])
    order = {name: k for k, name in enumerate(compare.get("ranking") or [])}
    return sorted(reports, key=lambda r: order.get(r.get("scheme"), len(order)))


def _scheme_label(report: dict) -> str:
    return str(report["scheme"]) if report.get("scheme") else "inits from the spec"


def _scheme_styles(labels: list) -> dict:
    """Colour, marker and line style per scheme that depend only on the set of names, never on the ranking.

    The usual schemes have a slot of their own (SCHEME_SLOTS), any other name the slot its CRC-32
    picks; on a collision the name placed later (usual schemes first, then by name) moves to the
    next free slot. So relu is always the same orange, no two schemes share a colour until the
    palette runs out, and then the line style and marker tell them apart.
    """
    styles, used = {}, {}
    size = len(SCHEME_PALETTE)
    for label in sorted(set(labels), key=lambda name: (name not in SCHEME_SLOTS, name)):
        start = SCHEME_SLOTS.get(label, zlib.crc32(label.encode("utf-8")) % size)
        free = [s % size for s in range(start, start + size) if s % size not in used]
        slot = free[0] if free else start
        generation = used.get(slot, -1) + 1
        used[slot] = generation
        styles[label] = (SCHEME_PALETTE[slot], SCHEME_MARKERS[(slot + 5 * generation) % len(SCHEME_MARKERS)],
                         SCHEME_LINESTYLES[generation % len(SCHEME_LINESTYLES)])
    return styles


def _signals(run) -> list:
    """What the drift check measures, as the statistics stage computed it (stats.signal_second_moment)."""
    return [_value(layer.signal_second_moment) for layer in (run.layers if run is not None else ())]


def _value(value) -> float:
    """A report number as a float; None (JSON's overflow) becomes NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _positive(value) -> bool:
    return math.isfinite(value) and value > 0


def _subset(n: int, limit: int) -> list:
    """All of range(n), or `limit` evenly spaced indices including the first and the last."""
    if n <= limit:
        return list(range(n))
    return sorted({round(k * (n - 1) / (limit - 1)) for k in range(limit)})


def _spans(names: list) -> str:
    """dense_3, or dense_3…dense_9 (7 layers)."""
    names = [str(name) for name in names]
    if len(names) <= 2:
        return ", ".join(names)
    return f"{names[0]}…{names[-1]} ({len(names)} layers)"


def _layers(n: int) -> str:
    return f"{n} layer" if n == 1 else f"{n} layers"


def _wrap(text: str, width: int = LEGEND_WIDTH) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_path(path) -> str:
    """The file format from `path`'s extension (png without one); ValueError for one matplotlib cannot write."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".") or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(f"cannot write a '.{suffix}' picture; use one of: {', '.join('.' + s for s in sorted(supported))}")
    return suffix


def _save(fig, path, fmt: str) -> None:
    """Render, then write atomically (a temporary file beside `path`, renamed over it when complete)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from initdiag.outputs import atomic_writer

    FigureCanvasAgg(fig)
    with atomic_writer(path, binary=True) as stream:
        fig.savefig(stream, format=fmt, dpi=DPI, facecolor="white", metadata=_metadata(fmt))


def _metadata(fmt: str) -> dict | None:
    """No creation date in SVG and PDF, so the same report gives the same file."""
    if fmt in ("svg", "svgz"):
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return None
