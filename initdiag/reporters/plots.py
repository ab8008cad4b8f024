"""Pictures of a check report and of a compare report: PNG, SVG, PDF (whatever matplotlib writes).

Like every reporter, these only draw the data they are given: the figures show the report's
numbers, with nothing computed but trivial transforms (second moment = variance + mean², percent,
log scale). Values that overflowed (inf, NaN, or null in a report read back from JSON) are left
out of the lines and named in the panel's title; exact zeros, which a log scale cannot show, are
drawn as open triangles on the panel's bottom edge and named too.

matplotlib is imported inside `plot_check` and `plot_compare` only: `initdiag check` without
`--plot` never pays for it. The figures are built on `matplotlib.figure.Figure` with the Agg
canvas, never pyplot, so no display and no global backend state are involved.
"""

from __future__ import annotations

import math
import os
import tempfile
import zlib
from pathlib import Path

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

# Where a finding is marked, and its short label there (the text reporter's flags).
FINDING_PANELS = {
    "exploding-activations": ("signal", "explode"),
    "vanishing-activations": ("signal", "vanish"),
    "overflow": ("signal", "overflow"),  # a backward-pass overflow goes to the gradient panel
    "exploding-gradients": ("gradient", "grad-explode"),
    "vanishing-gradients": ("gradient", "grad-vanish"),
    "saturation": ("units", "sat"),
    "dead-units": ("units", "dead"),
    "symmetry": ("units", "sym"),
}

# Scheme colours for compare plots: a scheme keeps its colour from run to run (see _scheme_styles).
SCHEME_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
)
SCHEME_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
SCHEME_LINESTYLES = ("-", "--", "-.", ":")

MAX_HISTOGRAMS = 12  # histogram panels at most; more layers get an evenly spaced subset
MAX_NAMED_LAYERS = 16  # layer names on the x axis up to this many layers, else indices
MAX_FINDINGS_LISTED = 10  # finding lines under a check figure
DPI = 100


# --------------------------------------------------------------------------- the public API


def plot_check(report: dict, histograms, path) -> None:
    """Draw one check report, with per-layer output histograms, to `path` (format from its extension).

    `report` is `initdiag.report.build(...)`'s dict (or its JSON read back); `histograms` is
    `propagate.run(..., histogram_bins=N).histograms`: per layer, (counts, edges) of its outputs
    (may be empty or None: the histogram panel then says so).
    """
    fmt = _format(path)
    from matplotlib.figure import Figure

    layers = report.get("layers") or []
    findings = report.get("findings") or []
    listed = _finding_lines(findings)
    line_height = 15 / 72  # inches per finding line
    top_height, bottom_height = 11.0, line_height * (len(listed) + 1.3) + 0.15
    fig = Figure(figsize=(18, top_height + bottom_height), dpi=DPI, layout="constrained")
    fig.suptitle(_check_title(report), fontsize=14, fontweight="bold",
                 bbox={"boxstyle": "round,pad=0.4", "facecolor": "white",
                       "edgecolor": VERDICT_COLORS.get(report.get("verdict"), "#555555"), "linewidth": 2.5})
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_height, bottom_height])
    left, right = top.subfigures(1, 2, width_ratios=[1.2, 1], wspace=0.02)

    signal_ax, gradient_ax, units_ax = left.subplots(3, 1, sharex=True)
    names = [layer.get("name", str(i)) for i, layer in enumerate(layers)]
    panels = {"signal": signal_ax, "gradient": gradient_ax, "units": units_ax}
    _signal_panel(signal_ax, report, layers)
    _gradient_panel(gradient_ax, layers)
    _units_panel(units_ax, report, layers)
    _layer_axis(units_ax, names)
    _mark_findings(panels, findings, names)

    _histogram_grid(right, layers, histograms)
    _findings_list(bottom, listed, line_height)
    _save(fig, path, fmt)


def plot_compare(compare: dict, path) -> None:
    """Draw a compare report (one line per scheme, legend best first) to `path` (format from its extension).

    `compare` is `{"initdiag_version", "spec", "seed", "reports": [check reports, each with
    "scheme" set], "ranking": [scheme names, best first]}`.
    """
    fmt = _format(path)
    from matplotlib.figure import Figure

    reports = _ranked(compare)
    styles = _scheme_styles([_scheme_label(r) for r in reports])
    first = reports[0] if reports else {}
    layers = first.get("layers") or []
    names = [layer.get("name", str(i)) for i, layer in enumerate(layers)]

    fig = Figure(figsize=(17, 7), dpi=DPI, layout="constrained")
    fig.suptitle(_compare_title(compare, first, len(reports)), fontsize=14, fontweight="bold")
    signal_ax, gradient_ax = fig.subplots(1, 2)
    signal_notes, gradient_notes = [], []
    handles = []
    for rank, rep in enumerate(reports, 1):
        label = _scheme_label(rep)
        color, marker, linestyle = styles[label]
        style = {"color": color, "marker": marker, "linestyle": linestyle, "linewidth": 2, "markersize": 6}
        rep_layers = rep.get("layers") or []
        line, zeros, bad = _log_line(signal_ax, [_signal(layer) for layer in rep_layers], style)
        signal_notes += _notes(label, zeros, bad, [layer.get("name") for layer in rep_layers])
        _, zeros, bad = _log_line(gradient_ax, [_value(layer.get("grad_var")) for layer in rep_layers], style)
        gradient_notes += _notes(label, zeros, bad, [layer.get("name") for layer in rep_layers])
        verdict = rep.get("verdict", "?")
        line.set_label(f"{rank}. {label}  ({verdict})")
        handles.append(line)

    _band(signal_ax, first)
    _titled(signal_ax, "activation second moment E[y²] = var + mean² through depth (logits for softmax)", signal_notes)
    signal_ax.set_ylabel("E[y²] (log scale)")
    _titled(gradient_ax, "gradient variance: var of dLoss/d(layer output) through depth", gradient_notes)
    gradient_ax.set_ylabel("variance (log scale)")
    for ax in (signal_ax, gradient_ax):
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        _layer_axis(ax, names)
    reference = signal_ax.get_legend_handles_labels()[0]  # the band and the input line
    fig.legend(handles=handles + reference, loc="outside right upper", fontsize=10,
               title="scheme, best first (verdict)", title_fontsize=10, frameon=False)
    _save(fig, path, fmt)


# --------------------------------------------------------------------------- check panels


def _signal_panel(ax, report: dict, layers: list) -> None:
    notes = []
    names = [layer.get("name") for layer in layers]
    series = (
        ("pre-activation variance (x·W + b)", "preact", [_value(layer.get("preact_var")) for layer in layers],
         {"linestyle": "--", "marker": "o", "markersize": 4}),
        ("activation variance (layer output)", "act", [_value(layer.get("act_var")) for layer in layers],
         {"linestyle": "-", "marker": "o", "markersize": 5}),
        ("activation E[y²] = var + mean², the drift check (logits for softmax)", "second_moment",
         [_signal(layer) for layer in layers], {"linestyle": ":", "marker": "s", "markersize": 4}),
    )
    for label, key, values, style in series:
        line, zeros, bad = _log_line(ax, values, {"color": COLORS[key], "linewidth": 1.8, **style})
        line.set_label(label)
        notes += _notes(label.split(" (")[0].split(" =")[0], zeros, bad, names)
    _band(ax, report)
    ax.set_yscale("log")
    ax.set_ylabel("variance (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    _titled(ax, "signal through depth: variances of each layer's pre-activation and output", notes)
    _legend(ax)


def _gradient_panel(ax, layers: list) -> None:
    notes = []
    names = [layer.get("name") for layer in layers]
    series = (
        ("var of dLoss/d(layer output)", "grad", "grad_var", {"linestyle": "-", "marker": "o", "markersize": 5}),
        ("var of dLoss/dW (weight gradient)", "weight_grad", "weight_grad_var",
         {"linestyle": "--", "marker": "s", "markersize": 4}),
    )
    drawn = False
    for label, color, key, style in series:
        values = [_value(layer.get(key)) for layer in layers]
        line, zeros, bad = _log_line(ax, values, {"color": COLORS[color], "linewidth": 1.8, **style})
        line.set_label(label)
        notes += _notes(label, zeros, bad, names)
        drawn = drawn or any(_positive(v) for v in values)
    ax.set_yscale("log")
    ax.set_ylabel("variance (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    if not drawn:
        ax.set_ylim(1e-3, 1e3)  # an empty log axis still needs limits
        ax.text(0.5, 0.5, "no positive finite gradient variance to draw", transform=ax.transAxes,
                ha="center", va="center", fontsize=11, color="#555555")
    _titled(ax, "gradients through depth (backward pass)", notes)
    _legend(ax)


def _units_panel(ax, report: dict, layers: list) -> None:
    n = len(layers)
    metrics = (
        ("dead units (output 0 for every sample)", "dead", "dead_fraction", "dead"),
        ("saturated outputs", "saturated", "saturation", "saturation"),
        ("duplicated units (symmetry)", "duplicated", "symmetry", None),
    )
    width = 0.8 / len(metrics)
    notes = []
    for k, (label, color, key, _) in enumerate(metrics):
        values = [_value(layer.get(key)) for layer in layers]
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        heights = [100 * v if math.isfinite(v) else 0.0 for v in values]
        xs = [i + (k - 1) * width for i in range(n)]
        ax.bar(xs, heights, width=width, color=COLORS[color], label=label, zorder=2)
        if bad:
            notes.append(f"{label.split(' (')[0]} not finite at {_spans([layers[i].get('name') for i in bad])}: not drawn")
    thresholds = report.get("thresholds") or {}
    lines: dict = {}
    for level, linestyle in (("warning", "--"), ("error", ":")):
        for _, _, _, prefix in metrics:
            value = thresholds.get(f"{prefix}_{level}") if prefix else None
            if value is not None and math.isfinite(value):
                lines.setdefault((100 * value, level, linestyle), []).append("dead" if prefix == "dead" else "saturation")
    for (value, level, linestyle), which in lines.items():
        if value <= 100:
            ax.axhline(value, color=SEVERITY_COLORS[level], linestyle=linestyle, linewidth=1.2, alpha=0.8, zorder=1,
                       label=f"{' & '.join(which)} {level} threshold ({value:g}%)")
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of units\n(saturated: % of outputs)")
    ax.grid(True, axis="y", alpha=0.3)
    _titled(ax, "units not learning: dead, saturated and duplicated", notes)
    _legend(ax)


def _band(ax, report: dict) -> None:
    """The healthy band (input E[x²] ×/÷ drift_warning, what the drift check allows) and the input's variance."""
    mean, var = _value(report.get("input_mean")), _value(report.get("input_var"))
    warning = _value((report.get("thresholds") or {}).get("drift_warning", 10.0))
    second = var + mean**2
    if math.isfinite(second) and second > 0 and math.isfinite(warning) and warning > 0:
        ax.axhspan(second / warning, second * warning, color=COLORS["band"], alpha=0.12, zorder=0, linewidth=0,
                   label=f"healthy band: input E[x²] ×/÷ {warning:g} (drift_warning)")
    if math.isfinite(var) and var > 0:
        ax.axhline(var, color=COLORS["reference"], linestyle="-.", linewidth=1.2, zorder=1,
                   label=f"input variance ({var:.3g})")


def _histogram_grid(subfig, layers: list, histograms) -> None:
    histograms = list(histograms or [])
    n = len(layers)
    if not histograms or len(histograms) != n:
        ax = subfig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no activation histograms were given\n(propagate.run(..., histogram_bins=N) makes them)",
                ha="center", va="center", fontsize=11, color="#555555", transform=ax.transAxes)
        subfig.suptitle("activation histograms", fontsize=12)
        return
    chosen = _subset(n, MAX_HISTOGRAMS)
    columns = 3 if len(chosen) > 4 else 2 if len(chosen) > 1 else 1
    rows = max(-(-len(chosen) // columns), 2 if len(chosen) > 1 else 1)
    axes = subfig.subplots(rows, columns, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(chosen):]:
        ax.set_axis_off()
    for slot, (ax, i) in enumerate(zip(flat, chosen)):
        counts, edges = histograms[i] if histograms[i] is not None else ([], [])
        layer = layers[i]
        ax.set_title(f"{layer.get('name', i)} · {layer.get('activation', '?')}", fontsize=10)
        total = sum(counts) if counts else 0
        if total and len(edges) == len(counts) + 1:
            percent = [100 * c / total for c in counts]
            ax.stairs(percent, edges, fill=True, color=COLORS["act"], alpha=0.75, linewidth=0)
            ax.set_ylim(0, max(percent) * 1.08)
        else:
            ax.text(0.5, 0.5, "no finite outputs\n(overflow)", ha="center", va="center", fontsize=10,
                    color=SEVERITY_COLORS["error"], transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.tick_params(labelsize=8)
        ax.xaxis.get_offset_text().set_fontsize(8)
        ax.grid(True, axis="y", alpha=0.3)
        if slot % columns == 0:
            ax.set_ylabel("% of outputs", fontsize=9)
        if slot >= len(chosen) - columns:
            ax.set_xlabel("output value", fontsize=9)
    shown = f"all {n} layers" if len(chosen) == n else f"{len(chosen)} of {n} layers, evenly spaced"
    subfig.suptitle(f"activation histograms: each layer's outputs over the batch ({shown})", fontsize=12)


def _mark_findings(panels: dict, findings: list, names: list) -> None:
    """A coloured band at the layer of each finding and its short label above the panel."""
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
        marks.setdefault((panel, i), []).append((finding["severity"], short))
    crowded = len(names) > MAX_NAMED_LAYERS
    for (panel, i), items in marks.items():
        ax = panels[panel]
        worst = "error" if any(severity == "error" for severity, _ in items) else "warning"
        color = SEVERITY_COLORS[worst]
        ax.axvspan(i - 0.45, i + 0.45, color=color, alpha=0.13, zorder=0, linewidth=0)
        label = "▼" if crowded else "▼ " + ", ".join(dict.fromkeys(short for _, short in items))
        ax.annotate(label, xy=(i, 1), xycoords=ax.get_xaxis_transform(), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8.5, fontweight="bold", color=color, annotation_clip=False)


def _finding_lines(findings: list) -> list:
    """(colour, text) per finding, most severe first as the report orders them; a tail line when cut."""
    lines = []
    for finding in findings[:MAX_FINDINGS_LISTED]:
        severity = finding.get("severity", "info")
        layer = f"{finding['layer']}: " if finding.get("layer") and not (finding.get("message") or "").startswith(finding["layer"]) else ""
        text = f"{severity.upper():8s} {finding.get('code', '?')}  —  {layer}{finding.get('message', '')}"
        lines.append((SEVERITY_COLORS.get(severity, "#333333"), _clip(text, 190)))
    if len(findings) > MAX_FINDINGS_LISTED:
        lines.append(("#555555", f"… and {len(findings) - MAX_FINDINGS_LISTED} more findings (see the text or JSON report)"))
    if not findings:
        lines.append((VERDICT_COLORS["healthy"], "no findings"))
    return lines


def _findings_list(subfig, lines: list, line_height: float) -> None:
    ax = subfig.subplots()
    ax.set_axis_off()
    ax.annotate("findings (▼ marks their layer in the panels above; red = error, orange = warning):",
                xy=(0, 1), xycoords="axes fraction", va="top", ha="left", fontsize=10, fontweight="bold")
    for k, (color, text) in enumerate(lines, 1):
        ax.annotate(text, xy=(0, 1), xycoords="axes fraction", xytext=(12, -k * line_height * 72),
                    textcoords="offset points", va="top", ha="left", fontsize=9.5, color=color, family="monospace")


# --------------------------------------------------------------------------- shared pieces


def _log_line(ax, values: list, style: dict):
    """Draw positive finite values as a line (gaps elsewhere); zeros as open triangles on the bottom edge.

    Returns (line, indices of zeros, indices of non-finite values).
    """
    xs = list(range(len(values)))
    ys = [v if _positive(v) else math.nan for v in values]
    (line,) = ax.plot(xs, ys, zorder=3, **style)
    zeros = [i for i, v in enumerate(values) if math.isfinite(v) and v <= 0]
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if zeros:
        ax.plot(zeros, [0.0] * len(zeros), transform=ax.get_xaxis_transform(), linestyle="none", marker="v",
                markersize=8, markerfacecolor="white", markeredgecolor=style.get("color"), markeredgewidth=1.5,
                clip_on=False, zorder=4)
    return line, zeros, bad


def _notes(label: str, zeros: list, bad: list, names: list) -> list:
    notes = []
    if bad:
        notes.append(f"{label}: inf/NaN (overflow) at {_spans([names[i] for i in bad])}, not drawn")
    if zeros:
        notes.append(f"{label}: exactly 0 at {_spans([names[i] for i in zeros])}, ▽ on the bottom edge (log scale)")
    return notes


def _titled(ax, title: str, notes: list) -> None:
    """The panel's title, then one smaller line per note (at most 3, the rest counted)."""
    ax.set_title(title, fontsize=12, loc="left", pad=14)
    if notes:
        shown = notes[:3] + ([f"… {len(notes) - 3} more"] if len(notes) > 3 else [])
        ax.set_title("\n".join(shown), fontsize=8.5, loc="right", color="#b35900", pad=14)
        ax.set_title(title + "\n" * len(shown), fontsize=12, loc="left", pad=14)


def _legend(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False, borderaxespad=0)


def _layer_axis(ax, names: list) -> None:
    n = len(names)
    ax.set_xlim(-0.6, n - 0.4) if n else None
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
        inits = list(dict.fromkeys(str(layer.get("init")) for layer in layers))
        init = "init " + " / ".join(inits) if inits else "init ?"
    name, spec = report.get("name", "?"), report.get("spec", "")
    verdict = str(report.get("verdict", "?")).upper()
    details = " · ".join(str(part) for part in (
        f"seed {report.get('seed')}", f"batch {report.get('batch')}", report.get("dtype"), f"loss {report.get('loss')}",
    ))
    return f"initdiag check: {name} ({spec}) · {init} · verdict: {verdict}\n{len(layers)} layers · {details}"


def _compare_title(compare: dict, first: dict, count: int) -> str:
    name = first.get("name", "?")
    return (f"initdiag compare: {name} ({compare.get('spec', first.get('spec', ''))}) · seed {compare.get('seed', first.get('seed'))}"
            f"\n{count} schemes, every layer's init replaced by each · legend best first")


def _ranked(compare: dict) -> list:
    """The reports in ranking order, best first; reports the ranking does not name keep their order after."""
    reports = list(compare.get("reports") or [])
    order = {name: k for k, name in enumerate(compare.get("ranking") or [])}
    return sorted(reports, key=lambda r: order.get(r.get("scheme"), len(order)))


def _scheme_label(report: dict) -> str:
    return str(report["scheme"]) if report.get("scheme") else "inits from the spec"


def _scheme_styles(labels: list) -> dict:
    """Colour, marker and line style per scheme that depend only on the set of names, never on the ranking.

    Each name starts at the palette slot its CRC-32 picks and, in sorted-name order, moves to the
    next free slot on a collision: a scheme keeps its colour from run to run, and no two share one
    until the palette runs out (then the line style changes).
    """
    styles, used = {}, set()
    size = len(SCHEME_PALETTE)
    for label in sorted(set(labels)):
        start = zlib.crc32(label.encode("utf-8")) % size
        slot = next((s % size for s in range(start, start + size) if s % size not in used), None)
        if slot is None:  # more schemes than colours: reuse, but with another line style
            slot = start
            generation = 1 + sum(1 for other in styles.values() if other[0] == SCHEME_PALETTE[slot])
        else:
            generation = 0
        used.add(slot)
        styles[label] = (SCHEME_PALETTE[slot], SCHEME_MARKERS[slot % len(SCHEME_MARKERS)],
                         SCHEME_LINESTYLES[generation % len(SCHEME_LINESTYLES)])
    return styles


def _signal(layer: dict) -> float:
    """What the drift check measures: the output's second moment, the logits' for softmax."""
    prefix = "preact" if str(layer.get("activation", "")).startswith("softmax") else "act"
    mean, var = _value(layer.get(f"{prefix}_mean")), _value(layer.get(f"{prefix}_var"))
    return var + mean**2


def _value(value) -> float:
    """A report number as a float; None (JSON's overflow) becomes NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _positive(value: float) -> bool:
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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format(path) -> str:
    """The file format from `path`'s extension (png without one); ValueError for one matplotlib cannot write."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lower().lstrip(".") or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(f"cannot write a '.{suffix}' picture; use one of: {', '.join('.' + s for s in sorted(supported))}")
    return suffix


def _save(fig, path, fmt: str) -> None:
    """Render, then write atomically: a temporary file beside `path`, renamed over it when complete."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            fig.savefig(stream, format=fmt, dpi=DPI, facecolor="white", metadata=_metadata(fmt))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _metadata(fmt: str) -> dict | None:
    """No creation date in SVG and PDF, so the same report gives the same file."""
    if fmt in ("svg", "svgz"):
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return None
