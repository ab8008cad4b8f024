"""The command line: it wires spec -> network -> run -> checks -> reporters, and decides exit codes.

Exit codes: 0 no finding reaches --fail-on; 1 one does; 2 invalid input or usage.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from initdiag import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Is a network's weight initialization healthy? Checks a YAML layer spec before any GPU hour is spent.",
)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
PLOT_BINS = 60


def _formats(command: str) -> type[Enum]:
    """The --format choices of `command`, from the REPORTERS registry (never a list of its own to drift)."""
    from initdiag.reporters import formats

    return Enum(f"{command.title()}Format", {name: name for name in formats(command)}, type=str)


CheckFormat, CompareFormat, RecommendFormat = _formats("check"), _formats("compare"), _formats("recommend")


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"initdiag {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """initdiag: weight-initialization health, per layer."""


def _invalid(lines) -> typer.Exit:
    for line in lines:
        typer.echo(str(line), err=True)
    return typer.Exit(EXIT_INVALID)


def _terminal() -> tuple[bool, int]:
    """Colour only on a terminal and never with NO_COLOR; 80 columns unless a terminal says otherwise."""
    tty = sys.stdout.isatty()
    color = tty and not os.environ.get("NO_COLOR")
    try:
        width = int(os.environ.get("COLUMNS", "")) if not tty else os.get_terminal_size().columns
    except (ValueError, OSError):
        width = 0
    return color, width if width > 0 else 80


def _thresholds(assignments: list[str]):
    """The --threshold assignments as Thresholds (defaults for the rest)."""
    from initdiag.checks import Thresholds

    return Thresholds().override(_threshold_changes(assignments))


def _threshold_changes(assignments: list[str]) -> dict:
    """--threshold name=value assignments, validated: name -> value."""
    from initdiag.checks import Thresholds

    thresholds, changes = Thresholds(), {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        try:
            changes[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not changes[name.strip()] >= 0:  # also refuses NaN, which would switch a check off silently
            raise _invalid([f"--threshold: expected name=value with a value >= 0 (e.g. dead_warning=0.2), not '{assignment}'"])
    try:
        thresholds.override(changes)
        return {name.replace("-", "_"): value for name, value in changes.items()}
    except KeyError as err:
        from initdiag.registry import closest

        known = list(Thresholds._fields)
        near = closest(str(err.args[0]).replace("-", "_"), known)
        hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(known)}"
        raise _invalid([f"--threshold: unknown threshold '{err.args[0]}' ({hint})"]) from None


def _format_option(command: str):
    """--format for `command`: its formats from the REPORTERS registry, each with its description."""
    from initdiag.reporters import DEFAULT, REPORTERS, formats

    return typer.Option(DEFAULT, "--format", help="Report format: " + "; ".join(
        f"{name} ({REPORTERS[name].description})" for name in formats(command)) + ".")


SPEC_ARGUMENT = typer.Argument(..., metavar="SPEC", help="The network spec (YAML).")
OUTPUT_OPTION = typer.Option(None, "--output", "-o", help="Write the report to this file (atomically) instead of standard output.")
FAIL_ON_OPTION = typer.Option(FailOn.error, "--fail-on", help="Exit 1 when a finding reaches this severity.")
SEED_OPTION = typer.Option(None, "--seed", min=0, help="Override the spec's seed.")
THRESHOLD_OPTION = typer.Option([], "--threshold", help="Override a threshold, name=value (repeatable); see README.")
ALLOW_CUSTOM_OPTION = typer.Option(False, "--allow-custom", help="Allow {custom: 'module:function'} inits, which import and run your code.")
MAX_MEMORY_OPTION = typer.Option(None, "--max-memory", help="Refuse runs needing more than this (e.g. 8GB); default: half the available memory.")
PLOT_OPTION = typer.Option(None, "--plot", help="Also draw the figure to this file (png, svg, pdf, ...).")
CONFIG_OPTION = typer.Option(None, "--config", help="Read settings from this file (an initdiag.toml, or a pyproject.toml with [tool.initdiag]).")
ISOLATED_OPTION = typer.Option(False, "--isolated", help="Ignore configuration files.")


def _configuration(config_file: Path | None, isolated: bool):
    """The configuration: --config, else the nearest initdiag.toml / .initdiag.toml / pyproject.toml [tool.initdiag]."""
    from initdiag import config
    from initdiag.checks import Thresholds

    try:  # the checks declare the thresholds a configuration may set
        return config.load(path=config_file, isolated=isolated, thresholds=Thresholds()._asdict())
    except config.ConfigError as err:
        raise _invalid(err.problems) from None
EVAL_OPTION = typer.Option(False, "--eval", help="Run as at inference: dropout off, batchnorm on its initial running statistics (mean 0, variance 1).")


def _memory_bound(max_memory: str | None) -> int | None:
    from initdiag import outputs

    try:
        return outputs.parse_size(max_memory) if max_memory is not None else None
    except ValueError as err:
        raise _invalid([f"--max-memory: {err}"]) from None


def _load(spec_path: Path, allow_custom: bool, seed: int | None, eval_mode: bool = False):
    """The validated spec, with --seed and --eval applied; exit 2 with every problem if it is invalid."""
    from initdiag import spec
    from initdiag.yamlsource import SpecErrors

    try:
        network_spec = spec.load(spec_path, allow_custom=allow_custom)
    except SpecErrors as errors:
        from initdiag import checks

        raise _invalid(checks.completed(errors).problems) from None
    network_spec = network_spec._replace(eval=eval_mode)
    return network_spec if seed is None else network_spec.with_seed(seed)


def _emit(text: str, output: Path | None, spec_path: Path, summary: str) -> None:
    """Print `text`, or write it atomically to --output (never over the spec)."""
    from initdiag import outputs

    if output is None:
        sys.stdout.write(text)
        return
    try:
        outputs.write_atomic(output, text, protected=[spec_path])
    except ValueError as err:
        raise _invalid([f"--output: {err}"]) from None
    except OSError as err:
        raise _invalid([f"--output: cannot write {output}: {err.strerror or err}"]) from None
    typer.echo(f"wrote {output} ({summary})", err=True)


def _check_plot(path: Path | None, spec_path: Path) -> None:
    """Refuse a --plot file that cannot be written before any work is done."""
    if path is None:
        return
    from initdiag import outputs
    from initdiag.reporters import plots

    try:
        outputs.check_target(path, protected=[spec_path])
        plots.check_path(path)
    except (OSError, ValueError) as err:
        raise _invalid([f"--plot: cannot write {path}: {getattr(err, 'strerror', None) or err}"]) from None


def _plot(draw, data, path: Path | None) -> None:
    if path is None:
        return
    try:
        draw(data, path)
    except (OSError, ValueError) as err:
        raise _invalid([f"--plot: cannot write {path}: {getattr(err, 'strerror', None) or err}"]) from None
    typer.echo(f"drew {path}", err=True)


@app.command()
def check(
    paths: Optional[list[Path]] = typer.Argument(None, metavar="PATH...", help="Spec files, folders (every *.yaml/*.yml below) or glob patterns."),
    exclude: list[str] = typer.Option([], "--exclude", help="Skip spec files matching this glob (repeatable)."),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="Replace every layer's weight init: a name, or a YAML mapping such as '{normal: {std: 0.01}}'."),
    output_format: Optional[CheckFormat] = typer.Option(None, "--format", help="Report format (default: text, or the configuration's): " + ", ".join(CheckFormat.__members__) + "."),
    output: Optional[Path] = OUTPUT_OPTION,
    fail_on: Optional[FailOn] = typer.Option(None, "--fail-on", help="Exit 1 when a finding reaches this severity (default: error)."),
    seed: Optional[int] = SEED_OPTION,
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Run this many seeds from the spec's (or --seed) and report each figure as mean ± spread, and a finding only when every seed has it (default 1)."),
    threshold: list[str] = THRESHOLD_OPTION,
    allow_custom: bool = ALLOW_CUSTOM_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
    plot: Optional[Path] = PLOT_OPTION,
    theory: bool = typer.Option(False, "--theory", help="Add the mean-field (infinite-width) prediction of each layer's pre-activation variance and gradient factor chi to the table."),
    eval_mode: bool = EVAL_OPTION,
    show_suppressed: bool = typer.Option(False, "--show-suppressed", help="Also list the findings that ignore: lists suppress (they never count towards the exit code)."),
    save_baseline: Optional[Path] = typer.Option(None, "--save-baseline", help="Record every spec's per-layer figures and findings in this file (stable JSON, for git)."),
    baseline_file: Optional[Path] = typer.Option(None, "--baseline", help="Report regressions and improvements against a file written by --save-baseline."),
    baseline_factor: float = typer.Option(2.0, "--baseline-factor", min=1.0, help="How far a layer's activation or gradient variance may move before it is a regression."),
    config_file: Optional[Path] = CONFIG_OPTION,
    isolated: bool = ISOLATED_OPTION,
    jobs: str = typer.Option("1", "--jobs", "-j", help="Check specs in this many processes ('auto': one per core); same results."),
    torch_model: Optional[str] = typer.Option(None, "--torch", metavar="MODULE:FACTORY", help="Check the PyTorch model this class or function builds (e.g. torchvision.models:resnet18), with its own initial values, instead of a spec (needs torch)."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="--torch: the input shape without the batch, e.g. 3,224,224 (token models: the sequence length)."),
    arg: list[str] = typer.Option([], "--arg", help="--torch: a keyword argument of the factory, key=value (the value read as YAML; repeatable)."),
) -> None:
    """Initialize each network, propagate a random batch forward and backward, and report per-layer health."""
    from initdiag import checks, gate, specfiles
    from initdiag.reporters import REPORTERS
    from initdiag.yamlsource import SpecErrors, SpecProblem

    paths, imported = _spec_paths(paths or [], torch_model, input_shape, arg)  # `imported` keeps a temporary folder

    try:
        workers = 1 if jobs == "1" else _resolve_jobs(jobs)
    except ValueError:
        raise _invalid([f"--jobs: expected a positive number or 'auto', not '{jobs}'"]) from None
    cli = {"fail_on": fail_on.value if fail_on else None, "format": output_format.value if output_format else None,
           "exclude": list(exclude) or None, "seed": seed, "seeds": seeds, "thresholds": _threshold_changes(threshold)}
    configuration = _configuration(config_file, isolated)
    reporter = REPORTERS[configuration.settings(None, cli).format]  # config only accepts REPORTERS' names
    memory_bound = _memory_bound(max_memory)
    files, unmatched = specfiles.expand(paths, exclude)
    files = [file for file in files if not configuration.excluded(file, {"exclude": list(exclude) or None})]
    # one file named on its own keeps the one-report output (and its errors: a missing file is exit 2)
    ci_format = reporter.scope == "run"  # these render every spec's report together
    single = len(paths) == 1 and not paths[0].is_dir() and not specfiles.is_pattern(paths[0]) and not ci_format
    if single:
        files, unmatched = [paths[0]], []
    if not single and plot is not None:
        raise _invalid(["--plot: draws one spec's figure; check a single spec file to plot it"])
    if single and plot is not None and configuration.settings(files[0], cli).seeds > 1:
        raise _invalid(["--plot: draws one run, and with --seeds N > 1 the report is a mean over seeds; "
                        "plot one seed's run with --seeds 1 (and --seed S)"])
    if single:
        _check_plot(plot, files[0])

    base = None
    if baseline_file is not None:
        from initdiag import baseline

        try:
            base = baseline.load(baseline_file)
        except baseline.BaselineError as err:
            raise _invalid([f"--baseline: {err}"]) from None

    diagnose = gate.SpecCheck(configuration, cli, allow_custom, eval_mode, scheme, memory_bound, base, baseline_factor,
                         PLOT_BINS if plot else 0)

    color, width = _terminal()
    if output is not None:
        color, width = False, max(width, 80)
    render = reporter.renderer("check")
    if single:
        try:
            result, run, findings, spec_fail_on = diagnose(files[0])
        except SpecErrors as errors:
            raise _invalid(checks.completed(errors).problems) from None
        _emit(render(result, color=color, width=width, theory=theory, suppressed=show_suppressed), output, files[0],
              f"verdict: {result['verdict']}")
        if plot is not None:
            from initdiag.reporters import plots

            _plot(lambda data, path: plots.plot_check(data, run, path), result, plot)
        _save_baseline(save_baseline, [result], files)
        raise typer.Exit(EXIT_FAILED if checks.fails(findings, spec_fail_on) else EXIT_OK)

    import time

    start = time.perf_counter()
    reports, problems, invalid, failed = [], [SpecProblem(None, "", message, file=".") for message in unmatched], len(unmatched), False
    for result, spec_problems, spec_failed in gate.run_specs(diagnose, files, workers):
        if spec_problems:  # reported, and the other specs still checked
            problems.extend(spec_problems)
            invalid += 1
            continue
        reports.append(result)
        failed = failed or spec_failed
    for problem in problems:
        typer.echo(problem.message if problem.file == "." else str(problem), err=True)
    summary = gate.summary(reports, invalid, len(files), time.perf_counter() - start)
    if not files and not problems:
        raise _invalid(["no spec files to check"])
    if reporter.name == "json":  # one JSON document for the run, the specs' reports in it
        from initdiag import __version__

        text = render({"initdiag_version": __version__, "reports": reports, "invalid": [str(p) for p in problems],
                       "summary": summary})
    elif ci_format:
        text = render(reports, [gate.problem_data(problem) for problem in problems], show_suppressed)
    else:
        text = "\n".join(render(result, color=color, width=width, theory=theory, suppressed=show_suppressed)
                         for result in reports)
        text += ("\n" if reports else "") + gate.summary_line(summary) + "\n"
    _emit(text, output, files[0] if files else Path("."), gate.summary_line(summary))
    _save_baseline(save_baseline, reports, files)
    raise typer.Exit(EXIT_INVALID if invalid else EXIT_FAILED if failed else EXIT_OK)


def _spec_paths(paths: list, torch_model: str | None, input_shape: str | None, arguments: list):
    """The paths to check, and the temporary folder holding the spec `--torch` wrote (None without it)."""
    if torch_model is None:
        if input_shape is not None or arguments:
            raise _invalid(["--input, --arg: describe the model of --torch; give --torch package.module:factory"])
        if not paths:
            raise _invalid(["PATH: give a spec file, a folder or a pattern (or --torch package.module:factory)"])
        return paths, None
    if paths:
        raise _invalid(["--torch: checks the model the factory builds; give no spec paths with it"])
    from initdiag.importers import ImportProblem, torch_fx

    try:
        draft = torch_fx.import_module(torch_model, input=input_shape, arg=arguments)
    except ImportProblem as problem:
        raise _invalid([str(problem)]) from None
    import atexit

    path, holder = draft.written_to_temporary()
    atexit.register(holder.cleanup)  # removed when the command ends, however it ends
    if draft.left_out:
        typer.echo(f"{torch_model}: not analysed: {', '.join(draft.left_out)} (they do not feed the first output)",
                   err=True)
    return [path], holder


def _resolve_jobs(value: str) -> int:
    from initdiag.compare import resolve_jobs

    return resolve_jobs(value)


def _save_baseline(path: Path | None, reports: list, specs: list) -> None:
    """Write the baseline of this run's (valid) specs, atomically and never over a spec."""
    if path is None:
        return
    from initdiag import baseline, outputs

    try:
        outputs.write_atomic(path, baseline.dumps(baseline.snapshot(reports)), protected=specs)
    except ValueError as err:
        raise _invalid([f"--save-baseline: {err}"]) from None
    except OSError as err:
        raise _invalid([f"--save-baseline: cannot write {path}: {err.strerror or err}"]) from None
    typer.echo(f"wrote the baseline of {len(reports)} spec(s) to {path}", err=True)


@app.command()
def compare(
    spec_path: Path = SPEC_ARGUMENT,
    schemes: Optional[str] = typer.Option(None, "--schemes", help="Comma-separated schemes (names or aliases), or 'all'. Default: the spec's own, the recommended ones, and the Xavier, He, LeCun and orthogonal families."),
    keep_overrides: bool = typer.Option(False, "--keep-overrides", help="Keep the inits that layers set themselves; replace only the defaults."),
    output_format: CompareFormat = _format_option("compare"),
    output: Optional[Path] = OUTPUT_OPTION,
    fail_on: FailOn = FAIL_ON_OPTION,
    seed: Optional[int] = SEED_OPTION,
    threshold: list[str] = THRESHOLD_OPTION,
    allow_custom: bool = ALLOW_CUSTOM_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
    jobs: str = typer.Option("1", "--jobs", "-j", help="Run schemes in this many processes ('auto': one per core); results are identical."),
    plot: Optional[Path] = PLOT_OPTION,
    eval_mode: bool = EVAL_OPTION,
) -> None:
    """Run several schemes on the same network, batch and draws, and rank them best first."""
    from initdiag import checks, network
    from initdiag import compare as comparison
    from initdiag.reporters import REPORTERS
    from initdiag.yamlsource import SpecErrors

    thresholds = _thresholds(threshold)
    memory_bound = _memory_bound(max_memory)
    _check_plot(plot, spec_path)
    try:
        workers = comparison.resolve_jobs(jobs)
    except ValueError:
        raise _invalid([f"--jobs: expected a positive number or 'auto', not '{jobs}'"]) from None
    network_spec = _load(spec_path, allow_custom, seed, eval_mode)
    names = None if schemes is None else [name.strip() for name in schemes.split(",") if name.strip()]
    if names == []:
        raise _invalid(["--schemes: expected comma-separated scheme names, e.g. xavier,relu"])
    try:
        inits = comparison.candidates(network_spec, names, allow_custom)
        for init in inits:  # shape problems (identity on a non-square layer, ...) before any run
            comparison.replace_inits(network_spec, init, keep_overrides)
        network.check_memory(network_spec, memory_bound)
        with _progress(len(inits), comparison.estimated_seconds(network_spec, len(inits))) as advance:
            diagnoses = comparison.run_all(network_spec, inits, keep_overrides, thresholds, memory_bound, workers, advance)
    except SpecErrors as errors:
        raise _invalid(errors.problems) from None
    result = comparison.build(network_spec, diagnoses)
    by_scheme = {diagnosis.report["scheme"]: diagnosis for diagnosis in diagnoses}

    color, width = _terminal()
    if output is not None:
        color, width = False, max(width, 80)
    render = REPORTERS[output_format.value].renderer("compare")
    _emit(render(result, color=color, width=width), output, spec_path, f"best: {result['ranking'][0]}")
    if plot is not None:
        from initdiag.reporters import plots

        _plot(lambda data, path: plots.plot_compare(data, {name: d.run for name, d in by_scheme.items()}, path), result, plot)
    best = by_scheme[result["ranking"][0]]
    raise typer.Exit(EXIT_FAILED if checks.fails(best.findings, fail_on.value) else EXIT_OK)


class Choice(str, Enum):
    measured = "measured"
    rule = "rule"


@app.command()
def recommend(
    spec_path: Path = SPEC_ARGUMENT,
    write: Optional[Path] = typer.Option(None, "--write", help="Write a copy of the spec with the recommended inits to this file (comments and key order kept)."),
    in_place: bool = typer.Option(False, "--in-place", help="Rewrite the spec itself with the recommended inits; the original is kept as SPEC.bak."),
    choice: Choice = typer.Option(Choice.measured, "--choice", help="Which recommendation --write uses: the measured best, or the rules of thumb."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Compute LSUV-style per-layer gains that bring each layer's activation second moment to --target, and write them as {scheme: {gain: g}}."),
    target: float = typer.Option(1.0, "--target", help="The activation second moment --calibrate aims for."),
    output_format: RecommendFormat = _format_option("recommend"),
    output: Optional[Path] = OUTPUT_OPTION,
    seed: Optional[int] = SEED_OPTION,
    threshold: list[str] = THRESHOLD_OPTION,
    allow_custom: bool = ALLOW_CUSTOM_OPTION,
    max_memory: Optional[str] = MAX_MEMORY_OPTION,
) -> None:
    """Per layer: the rules-of-thumb scheme and the scheme that measured best, with the evidence."""
    from initdiag import recommend as recommending
    from initdiag.reporters import REPORTERS
    from initdiag.yamlsource import SpecErrors

    thresholds = _thresholds(threshold)
    memory_bound = _memory_bound(max_memory)
    if seed is not None and calibrate and (write or in_place):
        raise _invalid(["--seed: gains calibrated on another seed would not reproduce on the spec's own; "
                        "set seed: in the spec instead"])
    if write is not None and in_place:
        raise _invalid(["--write and --in-place: choose one"])
    network_spec = _load(spec_path, allow_custom, seed)
    try:
        result = recommending.recommend(network_spec, thresholds, memory_bound, calibrate=calibrate, target=target)
    except SpecErrors as errors:
        raise _invalid(errors.problems) from None
    except MemoryError as error:  # its gain calibration builds outside pipeline.diagnose, which converts its own
        from initdiag import network

        raise _invalid(network.out_of_memory(network_spec, error).problems) from None
    except ValueError as err:
        raise _invalid([f"--target: {err}"]) from None

    color, width = _terminal()
    if output is not None:
        color, width = False, max(width, 80)
    render = REPORTERS[output_format.value].renderer("recommend")
    _emit(render(result, color=color, width=width), output, spec_path,
          f"recommended: {result['measured_best']}")
    if write is not None or in_place:
        try:
            written = recommending.write_spec(spec_path, result, write, in_place=in_place, choice=choice.value)
        except ValueError as err:
            raise _invalid([f"--write: {err}"]) from None
        except OSError as err:
            raise _invalid([f"--write: cannot write {write or spec_path}: {err.strerror or err}"]) from None
        typer.echo(f"wrote {written}" + (f" (the original is kept as {spec_path}.bak)" if in_place else ""), err=True)
    raise typer.Exit(EXIT_OK)


def _progress(total: int, seconds: float):
    """A transient progress bar on a terminal's stderr when the comparison should take over a second."""
    import contextlib

    if seconds < 1.0 or not sys.stderr.isatty():
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def bar():
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("comparing schemes", total=total)
            yield lambda: progress.advance(task)

    return bar()


@app.command("import")
def import_model(
    source: str = typer.Argument(..., metavar="SOURCE", help="What the model is: hf (a Hugging Face config.json), torch (package.module:factory), onnx, keras, dl4j (`initdiag import --help` lists them)."),
    model: str = typer.Argument(..., metavar="MODEL", help="The file to import (never written to), or for torch a factory package.module:name."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the spec to this file (atomically) instead of standard output; the model's initial values go to the folder NAME.init beside it."),
    force: bool = typer.Option(False, "--force", help="Overwrite --output (and its NAME.init folder) if they exist."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="hf: a text model's sequence length (default: its positions, at most 128)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="The spec's batch (default 4 for text models, 8 for images)."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1, help="hf: write at most this many blocks, for a quick check (the header says so)."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="The input shape without the batch, e.g. 3,224,224 (torch: required; keras, onnx: when the model leaves it open)."),
    arg: list[str] = typer.Option([], "--arg", help="torch: a keyword argument of the factory, key=value (the value read as YAML; repeatable)."),
    fans: Optional[str] = typer.Option(None, "--fans", help="dl4j: 'dl4j' keeps DL4J's conv fans (fan_out divided by the stride) so the spec draws what DL4J draws."),
) -> None:
    """Write a spec for a model described elsewhere: `initdiag import hf config.json -o model.yaml`."""
    from initdiag.importers import IMPORTERS, ImportProblem

    if source not in IMPORTERS:
        raise _invalid([f"SOURCE: unknown source '{source}'; known: " + "; ".join(
            f"{name} ({importer.describe})" for name, importer in IMPORTERS.items())])
    importer = IMPORTERS[source]
    given = {"steps": steps, "batch": batch, "layers": layers, "input": input_shape, "arg": arg or None, "fans": fans}
    unread = [f"--{name}" for name, value in given.items() if value is not None and name not in importer.takes]
    if unread:
        raise _invalid([f"{', '.join(unread)}: not read by the {source} importer (it takes: "
                        f"{', '.join('--' + name for name in importer.takes) or 'no options'})"])
    options = {name: value for name, value in given.items() if name in importer.takes and value is not None}
    try:
        draft = importer.convert(model, **options)
        if output is None:
            if draft.arrays:
                raise ImportProblem(f"{model}: the spec keeps the model's initial values in files beside it; "
                                    "give -o SPEC.yaml")
            sys.stdout.write(draft.text())
            raise typer.Exit(EXIT_OK)
        draft.write(output, force=force, protected=[Path(model)])
    except ImportProblem as problem:
        raise _invalid([str(problem)]) from None
    kept = f", initial values in {output.stem}.init/" if draft.arrays else ""
    typer.echo(f"wrote {output}{kept} (check it with: initdiag check {output})", err=True)
    raise typer.Exit(EXIT_OK)


@app.command("config")
def show_config(
    spec_path: Optional[Path] = typer.Argument(None, metavar="[SPEC]", help="Show the settings that apply to this spec (per-path overrides included)."),
    show: bool = typer.Option(False, "--show", help="Print the resolved configuration and where each value came from."),
    config_file: Optional[Path] = CONFIG_OPTION,
    isolated: bool = ISOLATED_OPTION,
) -> None:
    """The configuration in force: initdiag.toml, .initdiag.toml or pyproject.toml [tool.initdiag]."""
    if not show:
        raise _invalid(["config: add --show to print the resolved configuration"])
    sys.stdout.write(_configuration(config_file, isolated).describe(spec_path) + "\n")


@app.command("schema")
def print_schema() -> None:
    """Print the JSON Schema of the spec format, for editors (yaml-language-server) and validators."""
    import json

    from initdiag.schema import spec_schema

    sys.stdout.write(json.dumps(spec_schema(), indent=2) + "\n")


@app.command("schemes")
def list_schemes() -> None:
    """List the weight-initialization catalogue with formulas, parameters and aliases."""
    from initdiag.reporters import listings

    color, width = _terminal()
    sys.stdout.write(listings.schemes(color=color, width=width))


@app.command("activations")
def list_activations() -> None:
    """List the activations with their formulas, saturation rules and recommended schemes."""
    from initdiag.reporters import listings

    color, width = _terminal()
    sys.stdout.write(listings.activations(color=color, width=width))


def main() -> None:
    app()
