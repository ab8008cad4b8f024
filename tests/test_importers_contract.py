"""Contract tests generated from importers.IMPORTERS: every source declares what it reads and the options it
takes (each one an option of `initdiag import`), is documented in the README, refuses the options it does not
read, and turns an input it cannot use into one located line and exit 2 (never a traceback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from initdiag.cli import app
from initdiag.importers import IMPORTERS, Importer

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
runner = CliRunner()


def _import_options() -> set:
    command = typer.main.get_command(app).commands["import"]
    return {name.lstrip("-") for param in command.params if param.param_type_name == "option" for name in param.opts
            if name.startswith("--")}


@pytest.mark.parametrize("source", sorted(IMPORTERS))
def test_each_importer_declares_itself(source):
    importer = IMPORTERS[source]
    assert isinstance(importer, Importer) and callable(importer.convert)
    assert importer.describe and importer.describe[0].islower(), f"{source}: describe is a phrase for --help"
    unknown = set(importer.takes) - _import_options()
    assert not unknown, f"{source}: takes {sorted(unknown)}, which `initdiag import` has no option for"


@pytest.mark.parametrize("source", sorted(IMPORTERS))
def test_each_importer_is_documented(source):
    assert re.search(rf"initdiag import {source}\b", README), f"{source}: the README shows no `initdiag import {source}`"


@pytest.mark.parametrize("source", sorted(IMPORTERS))
def test_each_importer_refuses_an_option_it_does_not_read(source, tmp_path):
    unread = sorted({"steps", "layers", "fans", "input"} - set(IMPORTERS[source].takes))
    option = unread[0]
    result = runner.invoke(app, ["import", source, str(tmp_path / "model"), f"--{option}", "1"])
    assert result.exit_code == 2 and f"--{option}: not read by the {source} importer" in result.output


@pytest.mark.parametrize("source", sorted(IMPORTERS))
def test_each_importer_locates_an_input_it_cannot_read(source, tmp_path):
    missing = "no_such_package_xyz:model" if source == "torch" else str(tmp_path / "missing.file")
    extra = ["--input", "3"] if "input" in IMPORTERS[source].takes else []
    result = runner.invoke(app, ["import", source, missing, *extra, "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and missing.split(":")[0] in result.output
    assert not (tmp_path / "out.yaml").exists()


def test_an_unknown_source_lists_every_known_one():
    result = runner.invoke(app, ["import", "nope", "model"])
    assert result.exit_code == 2 and all(f"{name} (" in result.output for name in IMPORTERS)
