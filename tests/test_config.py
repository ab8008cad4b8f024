"""Project configuration (initdiag/config.py): discovery, parsing, errors, precedence, `config --show`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from initdiag import config
from initdiag.checks import Thresholds


def load(*args, **kwargs):
    """config.load with the declared thresholds, as the CLI passes them."""
    return config.load(*args, thresholds=Thresholds()._asdict(), **kwargs)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(**kwargs) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        load(**kwargs)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# discovery


def test_discovery_order_within_a_folder(tmp_path):
    plain = write(tmp_path / "initdiag.toml", 'fail-on = "info"\n')
    hidden = write(tmp_path / ".initdiag.toml", 'fail-on = "warning"\n')
    pyproject = write(tmp_path / "pyproject.toml", '[tool.initdiag]\nfail-on = "never"\n')
    assert config.find_config(tmp_path) == plain.resolve()
    plain.unlink()
    assert config.find_config(tmp_path) == hidden.resolve()
    hidden.unlink()
    assert config.find_config(tmp_path) == pyproject.resolve()
    assert load(start=tmp_path).settings().fail_on == "never"


def test_discovery_walks_up_and_the_nearest_wins(tmp_path):
    outer = write(tmp_path / "initdiag.toml", 'fail-on = "info"\n')
    inner = write(tmp_path / "a" / ".initdiag.toml", 'fail-on = "warning"\n')
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert config.find_config(deep) == inner.resolve()
    inner.unlink()
    assert config.find_config(deep) == outer.resolve()


def test_pyproject_without_a_tool_initdiag_table_is_skipped(tmp_path):
    outer = write(tmp_path / "initdiag.toml", 'fail-on = "info"\n')
    write(tmp_path / "a" / "pyproject.toml", '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n')
    assert config.find_config(tmp_path / "a") == outer.resolve()


def test_no_config_gives_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = config.find_config(tmp_path)
    loaded = load()
    if found is None:  # a config file above tmp_path on this machine would be legitimately found
        assert loaded.file is None
        assert loaded.settings() == config.Settings(thresholds=Thresholds()._asdict())


def test_load_starts_from_the_current_folder(tmp_path, monkeypatch):
    write(tmp_path / "initdiag.toml", "seed = 7\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    loaded = load()
    assert loaded.file == (tmp_path / "initdiag.toml").resolve()
    assert loaded.settings().seed == 7


def test_explicit_config_in_either_layout_beats_discovery(tmp_path, monkeypatch):
    write(tmp_path / "initdiag.toml", "seed = 1\n")
    monkeypatch.chdir(tmp_path)
    plain = write(tmp_path / "ci" / "gate.toml", "seed = 2\n")
    pyproject = write(tmp_path / "other" / "pyproject.toml", "[tool.initdiag]\nseed = 3\n")
    assert load(plain).settings().seed == 2
    assert load(plain).file == plain
    assert load(pyproject).settings().seed == 3


def test_explicit_config_problems(tmp_path):
    bare = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert problems_of(path=bare) == [f"{bare}: no [tool.initdiag] table"]
    missing = tmp_path / "nope.toml"
    assert problems_of(path=missing) == [f"{missing}: no such file"]


def test_isolated_ignores_config_files(tmp_path, monkeypatch):
    write(tmp_path / "initdiag.toml", 'fail-on = "never"\nseed = 4\n')
    monkeypatch.chdir(tmp_path)
    assert load().settings().fail_on == "never"
    isolated = load(isolated=True)
    assert isolated.file is None
    assert isolated.settings().fail_on == "error" and isolated.settings().seed is None
    assert problems_of(path=tmp_path / "initdiag.toml", isolated=True) == ["--config and --isolated cannot be used together"]


# parsing


def test_every_setting_is_parsed(tmp_path):
    path = write(tmp_path / "initdiag.toml", """
        fail-on = "warning"
        format = "sarif"
        exclude = ["specs/old/*.yaml", "scratch*"]
        seed = 0
        batch = 64
        [thresholds]
        dead-warning = 0.2
        drift_error = 500
        [[overrides]]
        paths = ["specs/*.yaml"]
        batch = 8
    """)
    settings = load(path).settings()
    assert settings.fail_on == "warning"
    assert settings.format == "sarif"
    assert settings.exclude == ("specs/old/*.yaml", "scratch*")
    assert settings.seed == 0 and settings.batch == 64
    expected = Thresholds()._replace(dead_warning=0.2, drift_error=500.0)._asdict()
    assert settings.thresholds == expected
    assert isinstance(settings.thresholds["drift_error"], float)
    assert load(path).settings(tmp_path / "specs" / "a.yaml").batch == 8


def test_snake_case_spellings_are_accepted(tmp_path):
    path = write(tmp_path / "initdiag.toml", 'fail_on = "info"\n[[overrides]]\npaths = ["*"]\nfail_on = "never"\n')
    assert load(path).settings().fail_on == "info"
    assert load(path).settings(tmp_path / "a.yaml").fail_on == "never"


def test_all_problems_at_once_with_file_key_and_message(tmp_path):
    path = write(tmp_path / "initdiag.toml", """
        fial-on = "warning"
        format = "sarf"
        exclude = "old/*.yaml"
        seed = -1
        batch = true
        [thresholds]
        dead_warnin = 0.2
        drift-error = nan
        saturation_error = "high"
        symmetry_error = -1
        [[overrides]]
        format = "json"
        color = true
    """)
    problems = problems_of(path=path)
    assert problems == [
        f"{path}: fial-on: unknown key (did you mean 'fail-on'?)",
        f"{path}: format: 'sarf' is not valid (did you mean 'sarif'?)",
        f"{path}: exclude: expected a list of glob strings, got 'old/*.yaml' (a string)",
        f"{path}: seed: expected an integer >= 0, got -1 (an integer)",
        f"{path}: batch: expected an integer >= 1, got True (a boolean)",
        f"{path}: thresholds.dead_warnin: unknown threshold (did you mean 'dead_warning'?)",
        f"{path}: thresholds.drift-error: expected a number >= 0, got nan (a number)",
        f"{path}: thresholds.saturation_error: expected a number >= 0, got 'high' (a string)",
        f"{path}: thresholds.symmetry_error: expected a number >= 0, got -1 (an integer)",
        f"{path}: overrides[0].format: not allowed in an override, only at the top level",
        f"{path}: overrides[0].color: unknown key (expected one of: paths, fail-on, seed, seeds, batch, thresholds)",
        f"{path}: overrides[0].paths: required: the globs of the specs this override applies to",
    ]


def test_pyproject_problems_name_the_full_dotted_key(tmp_path):
    path = write(tmp_path / "pyproject.toml", """
        [tool.initdiag]
        fail-on = "warn"
        [[tool.initdiag.overrides]]
        paths = []
        seed = "1"
    """)
    assert problems_of(path=path) == [
        f"{path}: tool.initdiag.fail-on: 'warn' is not valid (did you mean 'warning'?)",
        f"{path}: tool.initdiag.overrides[0].paths: expected a non-empty list of glob strings, got [] (an array)",
        f"{path}: tool.initdiag.overrides[0].seed: expected an integer >= 0, got '1' (a string)",
    ]


def test_a_key_given_in_both_spellings_is_an_error(tmp_path):
    path = write(tmp_path / "initdiag.toml", 'fail-on = "info"\nfail_on = "never"\n')
    assert problems_of(path=path) == [f"{path}: fail_on: given twice (as 'fail-on' and 'fail_on')"]


def test_overrides_must_be_an_array_of_tables(tmp_path):
    path = write(tmp_path / "initdiag.toml", '[overrides]\npaths = ["*"]\n')
    assert problems_of(path=path) == [f"{path}: overrides: expected an array of tables ([[overrides]])"]


def test_malformed_toml_is_a_config_error_with_its_line(tmp_path):
    path = write(tmp_path / "initdiag.toml", 'seed = 1\nfail-on = \n')
    (problem,) = problems_of(path=path)
    assert problem.startswith(f"{path}: invalid TOML: ") and "line 2" in problem


def test_malformed_pyproject_found_by_discovery_is_reported(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.initdiag\n")
    with pytest.raises(config.ConfigError, match="invalid TOML"):
        config.find_config(tmp_path)


# precedence


def test_fail_on_precedence_default_file_override_command_line(tmp_path):
    spec = tmp_path / "specs" / "a.yaml"
    assert load(isolated=True).settings(spec).fail_on == "error"
    path = write(tmp_path / "initdiag.toml", 'fail-on = "warning"\n')
    assert load(path).settings(spec).fail_on == "warning"
    write(path, 'fail-on = "warning"\n[[overrides]]\npaths = ["specs/*.yaml"]\nfail-on = "never"\n')
    loaded = load(path)
    assert loaded.settings(spec).fail_on == "never"
    assert loaded.settings(tmp_path / "other.yaml").fail_on == "warning"
    assert loaded.settings().fail_on == "warning"  # no spec: no override applies
    assert loaded.settings(spec, {"fail_on": "info"}).fail_on == "info"
    assert loaded.settings(spec, {"fail_on": None}).fail_on == "never"  # None: not given


def test_later_overrides_win(tmp_path):
    path = write(tmp_path / "initdiag.toml", """
        [[overrides]]
        paths = ["*.yaml"]
        seed = 1
        [[overrides]]
        paths = ["deep_*.yaml"]
        seed = 2
    """)
    loaded = load(path)
    assert loaded.settings(tmp_path / "deep_a.yaml").seed == 2
    assert loaded.settings(tmp_path / "wide.yaml").seed == 1


def test_thresholds_merge_per_key_across_layers(tmp_path):
    path = write(tmp_path / "initdiag.toml", """
        thresholds = {dead-warning = 0.2, drift-error = 500, dead-error = 0.6}
        [[overrides]]
        paths = ["*.yaml"]
        thresholds = {dead-warning = 0.3, gradient-warning = 50}
    """)
    got = load(path).settings(tmp_path / "a.yaml", {"thresholds": {"drift-error": 900}}).thresholds
    assert got == Thresholds()._replace(dead_warning=0.3, drift_error=900.0, dead_error=0.6, gradient_warning=50.0)._asdict()


def test_command_line_values_are_checked_and_accept_enums(tmp_path):
    loaded = load(isolated=True)
    fail_on = type("FailOn", (), {"value": "warning"})()  # stands for the CLI's str Enum
    assert loaded.settings(cli={"fail_on": fail_on, "exclude": []}).fail_on == "warning"
    with pytest.raises(config.ConfigError) as caught:
        loaded.settings(cli={"thresholds": {"dead_warnig": 1.0}, "seed": -2})
    assert caught.value.problems == [
        "command line: thresholds.dead_warnig: unknown threshold (did you mean 'dead_warning'?)",
        "command line: seed: expected an integer >= 0, got -2 (an integer)",
    ]


def test_overrides_match_relative_to_the_config_folder(tmp_path, monkeypatch):
    path = write(tmp_path / "initdiag.toml", """
        [[overrides]]
        paths = ["specs/**/*.yaml"]
        seed = 1
        [[overrides]]
        paths = ["deep/*.yaml"]
        batch = 2
    """)
    (tmp_path / "specs").mkdir()
    monkeypatch.chdir(tmp_path / "specs")
    loaded = load()
    assert loaded.file == path.resolve()
    nested = loaded.settings(Path("deep") / "a.yaml")  # relative to the current folder, tmp_path/specs
    assert nested.seed == 1 and nested.batch is None  # 'deep/*.yaml' is not relative to the config's folder
    assert loaded.settings(Path("a.yaml")).seed == 1  # '**/' also matches no folder
    assert loaded.settings(tmp_path / "a.yaml").seed is None
    assert loaded.settings(tmp_path.parent / "specs" / "a.yaml").seed is None  # outside the config's folder


def test_exclude_patterns_are_relative_to_their_source(tmp_path, monkeypatch):
    write(tmp_path / "initdiag.toml", 'exclude = ["specs/old/*", "scratch_*.yaml"]\n')
    (tmp_path / "specs").mkdir()
    monkeypatch.chdir(tmp_path / "specs")
    loaded = load()
    assert loaded.excluded(Path("old/a.yaml"))
    assert loaded.excluded(Path("new/scratch_1.yaml"))  # a pattern also matches the bare file name
    assert not loaded.excluded(Path("new/a.yaml"))
    assert loaded.excluded(Path("new/a.yaml"), {"exclude": ["new/*"]})
    assert not loaded.excluded(Path("old/a.yaml"), {"exclude": ["new/*"]})  # the command line replaces the file's


# config --show


def test_sources_and_describe_name_where_each_value_came_from(tmp_path):
    path = write(tmp_path / "initdiag.toml", """
        fail-on = "warning"
        thresholds = {drift-error = 500}
        [[overrides]]
        paths = ["x.yaml"]
        [[overrides]]
        paths = ["a.yaml"]
        thresholds = {dead-warning = 0.3}
    """)
    loaded = load(path)
    spec = tmp_path / "a.yaml"
    sources = loaded.sources(spec, {"seed": 5})
    assert sources["fail_on"] == ("warning", str(path))
    assert sources["format"] == ("text", "default")
    assert sources["seed"] == (5, "command line")
    assert sources["thresholds.drift_error"] == (500.0, str(path))
    assert sources["thresholds.dead_warning"] == (0.3, f"{path} overrides[1]")
    assert sources["thresholds.dead_error"] == (0.5, "default")
    text = loaded.describe(spec, {"seed": 5})
    lines = [line.split() for line in text.splitlines()]
    assert lines[0] == ["config", "file:", str(path)]
    assert ["fail-on", "warning", str(path)] in lines
    assert ["seed", "5", "command", "line"] in lines
    assert ["batch", "(the", "spec's)", "default"] in lines
    assert ["drift_error", "500", str(path)] in lines
    assert ["dead_warning", "0.3", str(path), "overrides[1]"] in lines
    assert ["thresholds:"] in lines
    assert sum(line[0] in Thresholds._fields for line in lines) == len(Thresholds._fields)


def test_describe_without_a_config_file(tmp_path):
    text = load(isolated=True).describe()
    assert text.splitlines()[0] == "config file: (none)"
    assert all(line.split()[-1] in ("default", "(none)", "thresholds:") for line in text.splitlines())
