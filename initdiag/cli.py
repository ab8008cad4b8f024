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


class Format(str, Enum):
    text = "text"
    json = "json"


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
        return thresholds.override(changes)
    except KeyError as err:
        from initdiag.registry import closest

        known = list(Thresholds._fields)
        near = closest(str(err.args[0]).replace("-", "_"), known)
        hint = f"did you mean '{near}'?" if near else f"expected one of: {', '.join(known)}"
        raise _invalid([f"--threshold: unknown threshold '{err.args[0]}' ({hint})"]) from None


@app.command()
def check(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="The network spec (YAML)."),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="Replace every layer's weight init: a name, or a YAML mapping such as '{normal: {std: 0.01}}'."),
    output_format: Format = typer.Option(Format.text, "--format", help="Report format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report to this file (atomically) instead of standard output."),
    fail_on: FailOn = typer.Option(FailOn.error, "--fail-on", help="Exit 1 when a finding reaches this severity."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Override the spec's seed."),
    threshold: list[str] = typer.Option([], "--threshold", help="Override a threshold, name=value (repeatable); see README."),
    allow_custom: bool = typer.Option(False, "--allow-custom", help="Allow {custom: 'module:function'} inits, which import and run your code."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse runs needing more than this (e.g. 8GB); default: half the available memory."),
) -> None:
    """Initialize the network, propagate a random batch forward and backward, and report per-layer health."""
    from initdiag import checks, initspec, network, outputs, propagate, report, spec
    from initdiag.reporters import REPORTERS
    from initdiag.yamlsource import SpecErrors

    thresholds = _thresholds(threshold)
    try:
        memory_bound = outputs.parse_size(max_memory) if max_memory is not None else None
    except ValueError as err:
        raise _invalid([f"--max-memory: {err}"]) from None
    try:
        network_spec = spec.load(spec_path, allow_custom=allow_custom)
        if scheme is not None:
            override = initspec.parse(scheme, "--scheme", allow_custom, base_dir=Path.cwd())
            network_spec = network_spec.with_init(override)
        if seed is not None:
            network_spec = network_spec.with_seed(seed)
        built = network.build(network_spec, memory_bound)
    except SpecErrors as errors:
        raise _invalid(errors.problems) from None
    run = propagate.run(built)
    findings = checks.find(run, network_spec, thresholds)
    result = report.build(network_spec, run, findings, network_spec.scheme_override.display if scheme else None, thresholds)

    color, width = _terminal()
    if output is not None:
        text = REPORTERS[output_format.value](result, color=False, width=max(width, 80))
        try:
            outputs.write_atomic(output, text, protected=[spec_path])
        except ValueError as err:
            raise _invalid([f"--output: {err}"]) from None
        except OSError as err:
            raise _invalid([f"--output: cannot write {output}: {err.strerror or err}"]) from None
        typer.echo(f"wrote {output} (verdict: {result['verdict']})", err=True)
    else:
        sys.stdout.write(REPORTERS[output_format.value](result, color=color, width=width))
    raise typer.Exit(EXIT_FAILED if checks.fails(findings, fail_on.value) else EXIT_OK)


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
