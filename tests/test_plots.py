"""The picture reporters (`initdiag.reporters.plots`): files, robustness, content, and lazy import.

What is pinned here:
- `plot_check` and `plot_compare` write PNG, SVG and PDF by the path's extension: a PNG of a
  plausible size, an SVG that parses as XML, a PDF; an unknown extension is refused before
  anything is written, and no temporary file is left behind;
- overflow (inf/NaN, or null in a report read back from JSON) and zeros on log axes plot
  without any warning and are named in the legend;
- a 30-layer network plots, with an evenly spaced subset of 12 histograms that says so;
- findings are marked on their layers; the compare legend follows the ranking, best first,
  and a scheme's colour does not depend on the ranking;
- `initdiag check` without a plot, and importing the plots module, never import matplotlib.

Content is read from SVGs rendered with `svg.fonttype: none`, which keeps text as text.
Every test runs with warnings turned into errors.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import pytest

from initdiag import checks, initspec, network, propagate, report, spec
from initdiag.reporters import json_format, plots
from conftest import write_spec

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_specs"

pytestmark = pytest.mark.filterwarnings("error")

COMPARE_SCHEMES = ("relu", "xavier", "normal", "{normal: {std: 0.01}}")


# --------------------------------------------------------------------------- helpers


@lru_cache(maxsize=None)
def _checked(path: str, scheme: str | None = None, bins: int = 60):
    network_spec = spec.load(path)
    if scheme is not None:
        network_spec = network_spec.with_init(initspec.parse(scheme, "--scheme"))
    run = propagate.run(network.build(network_spec), histogram_bins=bins)
    findings = checks.find(run, network_spec)
    rep = report.build(network_spec, run, findings, network_spec.scheme_override.display if scheme else None)
    return json.dumps(rep), run  # a fresh dict per caller: plots must not depend on mutation


def checked(stem_or_path, scheme: str | None = None):
    path = str(stem_or_path) if str(stem_or_path).endswith(".yaml") else str(SAMPLES / f"{stem_or_path}.yaml")
    text, run = _checked(path, scheme)
    return json.loads(text), run


def compare_report(stem: str = "deep_tanh_xavier", schemes=COMPARE_SCHEMES, ranking=None) -> tuple[dict, dict]:
    """A compare report and its schemes' statistics (what plot_compare draws the signal from)."""
    checks_ = [checked(stem, scheme) for scheme in schemes]
    reports = [rep for rep, _ in checks_]
    runs = {rep["scheme"]: run for rep, run in checks_}
    names = [rep["scheme"] for rep in reports]
    return {
        "initdiag_version": reports[0]["initdiag_version"],
        "spec": reports[0]["spec"],
        "seed": reports[0]["seed"],
        "reports": reports,
        "ranking": list(ranking) if ranking is not None else names,
    }, runs


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_plausible_png(path: Path) -> None:
    width, height = png_size(path)
    assert 600 <= width <= 4000 and 400 <= height <= 4000, (width, height)


def svg_text(draw, tmp_path: Path, name: str = "figure.svg") -> str:
    """Render with text kept as <text> elements, and return all the SVG's text, in document order."""
    import matplotlib

    path = tmp_path / name
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        draw(path)
    root = ET.parse(path).getroot()
    return "\n".join("".join(element.itertext()) for element in root.iter() if element.tag.endswith("text"))


def deep_spec(directory: Path, layers: int = 30) -> Path:
    body = "".join("  - dense: 64\n" for _ in range(layers - 1))
    return write_spec(directory, "name: deep\ninput: [64]\nbatch: 64\ndefaults:\n  init: relu\n  activation: relu\n"
                      f"layers:\n{body}  - dense: 10\n    activation: softmax\n    init: xavier\n")


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_check_writes_the_format_its_extension_names(tmp_path, suffix):
    rep, run = checked("mnist_relu_he")
    path = tmp_path / f"report.{suffix}"
    path.write_bytes(b"an older picture")  # replaced, not appended to
    plots.plot_check(rep, run, path)
    assert_written(path, suffix)


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_compare_writes_the_format_its_extension_names(tmp_path, suffix):
    path = tmp_path / f"compare.{suffix}"
    plots.plot_compare(*compare_report(), str(path))  # a str path works as well as a Path
    assert_written(path, suffix)


def assert_written(path: Path, suffix: str) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    if suffix == "png":
        assert_plausible_png(path)
    elif suffix == "svg":
        assert ET.parse(path).getroot().tag.endswith("svg")
    else:
        data = path.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "a temporary file was left behind"


def test_an_unknown_extension_is_refused_before_anything_is_written(tmp_path):
    rep, run = checked("mnist_relu_he")
    with pytest.raises(ValueError, match=r"\.txt.*\.png"):
        plots.plot_check(rep, run, tmp_path / "report.txt")
    with pytest.raises(ValueError, match=r"\.docx"):
        plots.plot_compare(*compare_report(), tmp_path / "compare.docx")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- overflow, zeros, many layers


def test_overflow_plots_without_warnings(tmp_path):
    """inf and NaN in the report and an empty last histogram, through Agg."""
    rep, run = checked("exploding_normal", "{normal: {std: 1000}}")
    assert not math.isfinite(rep["layers"][-1]["act_var"]) and not math.isfinite(rep["layers"][0]["grad_var"])
    assert run.histograms[-1] == ([], [])  # the premise: the forward and the backward pass overflowed
    plots.plot_check(rep, run, tmp_path / "report.png")
    assert_plausible_png(tmp_path / "report.png")


def test_overflow_is_named_and_left_out(tmp_path):
    """Read back from strict JSON, where inf and NaN became null."""
    rep, run = checked("exploding_normal", "{normal: {std: 1000}}")
    strict = json.loads(json_format.render(rep))
    assert strict["layers"][-1]["act_var"] is None and strict["layers"][0]["grad_var"] is None  # the premise
    text = svg_text(lambda path: plots.plot_check(strict, run, path), tmp_path)
    assert "pre-act var, act var, E[y²] inf/NaN (overflow) at dense_8, dense_9: not drawn" in text.replace("\n", " ")
    assert "no positive finite gradient variance to draw" in text
    assert "no finite outputs" in text  # the last layer's histogram
    assert "▼ overflow" in text and "▼ dead" in text  # the findings, on their layers
    assert "ERROR    overflow" in text and "WARNING  dead-units" in text  # and listed
    assert "all 10 layers" in text  # few layers: every histogram, and names on the x axis
    for i in range(10):
        assert f"dense_{i} · {'relu' if i < 9 else 'identity'}" in text
    assert "layer (input → output)" in text and "layer index" not in text


def test_zeros_on_log_axes_plot_without_warnings_and_are_named(tmp_path):
    rep, run = checked("zero_init")
    assert rep["layers"][0]["act_var"] == 0 and rep["layers"][0]["weight_grad_var"] == 0  # the premise
    text = svg_text(lambda path: plots.plot_check(rep, run, path), tmp_path)
    assert "exactly 0 at dense_0" in text
    assert "drawn on the bottom edge" in text
    for mark in ("▼ vanish", "▼ grad-vanish", "▼ dead, sym"):
        assert mark in text


def test_compare_with_overflow_and_zeros_plots_without_warnings(tmp_path):
    compare = compare_report("exploding_normal", ("relu", "zero", "{normal: {std: 1000}}"))
    text = svg_text(lambda path: plots.plot_compare(*compare, path), tmp_path)
    assert "exactly 0" in text and "inf/NaN (overflow)" in text


def test_thirty_layers_show_twelve_evenly_spaced_histograms(tmp_path):
    rep, run = checked(deep_spec(tmp_path))
    assert len(rep["layers"]) == 30
    text = svg_text(lambda path: plots.plot_check(rep, run, path), tmp_path)
    assert "12 of 30 layers, evenly spaced" in text
    titles = [line for line in text.splitlines() if " · relu" in line or " · softmax" in line]
    shown = [int(line.split(" · ")[0].removeprefix("dense_")) for line in titles]
    assert len(shown) == 12 and shown == sorted(shown) and shown[0] == 0 and shown[-1] == 29
    gaps = {b - a for a, b in zip(shown, shown[1:])}
    assert gaps <= {2, 3}, shown  # evenly spaced: 29 / 11 ≈ 2.6
    assert "layer index" in text  # indices, not 30 names, on the x axis


def test_missing_histograms_are_said_not_fatal(tmp_path):
    rep, run = checked("mnist_relu_he")
    text = svg_text(lambda path: plots.plot_check(rep, run._replace(histograms=()), path), tmp_path)
    assert "no activation histograms were given" in text


# --------------------------------------------------------------------------- compare: ranking and colours


def test_compare_legend_follows_the_ranking_and_colours_do_not(tmp_path):
    names = [checked("deep_tanh_xavier", scheme)[0]["scheme"] for scheme in COMPARE_SCHEMES]
    colours = {name: style[0] for name, style in plots._scheme_styles(names).items()}
    assert len(set(colours.values())) == len(names)
    for ranking in (names, [names[2], names[0], names[3], names[1]]):
        compare = compare_report(ranking=ranking)
        path = tmp_path / "compare.svg"
        text = svg_text(lambda path: plots.plot_compare(*compare, path), tmp_path, path.name)
        entries = [line for line in text.splitlines() if line[:1].isdigit() and ". " in line]
        assert [entry.split(". ", 1)[1].split("  (")[0] for entry in entries] == ranking
        assert [entry.split(".")[0] for entry in entries] == ["1", "2", "3", "4"]
        assert "seed 0" in text and "deep_tanh_xavier.yaml" in text
        svg = path.read_text(encoding="utf-8")
        for name in names:  # every scheme's line is drawn in its own colour, whatever its rank
            assert f"stroke: {colours[name]}" in svg, name


def test_a_scheme_keeps_its_colour_whatever_the_ranking():
    names = ["relu", "xavier", "normal", "normal(std=0.01)", "lecun_normal", "orthogonal"]
    styles = plots._scheme_styles(names)
    assert plots._scheme_styles(list(reversed(names))) == styles
    assert plots._scheme_styles(names[2:] + names[:2]) == styles
    assert len({style[0] for style in styles.values()}) == len(names), "two schemes share a colour"
    # The usual schemes keep their colour whatever else is compared with them.
    from initdiag import schemes

    assert set(plots.SCHEME_SLOTS) <= set(schemes.SCHEMES), "SCHEME_SLOTS names a scheme that does not exist"
    usual = plots._scheme_styles(list(plots.SCHEME_SLOTS))
    assert len({style[0] for style in usual.values()}) == len(usual)
    # normal(std=0.005) hashes to relu's slot and sorts before it: relu must still win its slot.
    for others in (["orthogonal"], ["xavier", "normal(std=0.005)", "scheme_x"], [f"scheme_{k}" for k in range(8)]):
        assert plots._scheme_styles(["relu", *others])["relu"] == usual["relu"], others
    many = plots._scheme_styles([f"scheme_{k}" for k in range(20)])
    assert len(set(many.values())) == 20, "beyond the palette, line style and marker must still differ"


# --------------------------------------------------------------------------- helpers with rules of their own


def test_evenly_spaced_subset():
    assert plots._subset(5, 12) == [0, 1, 2, 3, 4]
    for n in (13, 30, 100, 1000):
        chosen = plots._subset(n, 12)
        assert len(chosen) == 12 and chosen[0] == 0 and chosen[-1] == n - 1 and chosen == sorted(set(chosen))


# --------------------------------------------------------------------------- matplotlib only when plotting


def test_check_without_a_plot_never_imports_matplotlib():
    code = textwrap.dedent(
        """
        import sys
        import initdiag.reporters.plots
        assert "matplotlib" not in sys.modules, "importing initdiag.reporters.plots imported matplotlib"
        from typer.testing import CliRunner
        from initdiag.cli import app
        result = CliRunner().invoke(app, ["check", "sample_specs/mnist_relu_he.yaml"])
        assert result.exit_code == 0 and "verdict: healthy" in result.output, result.output
        leaked = sorted(name for name in sys.modules if name.split(".")[0] == "matplotlib")
        assert not leaked, f"initdiag check imported {leaked[:5]}"
        print("clean")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stdout + done.stderr


def test_plotting_imports_matplotlib_so_the_import_check_can_see_it(tmp_path):
    """The control for the test above: in a fresh process, plotting does load matplotlib."""
    picture = tmp_path / "empty.png"
    code = textwrap.dedent(
        f"""
        import sys
        from initdiag.reporters import plots
        plots.plot_compare({{"spec": "x.yaml", "seed": 0, "reports": [], "ranking": []}}, {{}}, {str(picture)!r})
        print("matplotlib" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stdout + done.stderr
    assert_plausible_png(picture)  # an empty compare still makes a picture
