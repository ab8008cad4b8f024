"""The code flows one way (README, "Development"): no module imports from a later stage, not even inside
a function. Every module of the package has a stage here; a new module without one fails, naming it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "initdiag"
STAGES = (
    ("foundation", ("registry", "numbers", "yamlsource", "sampling", "outputs", "validate", "activations",
                    "schemes", "initspec", "losses")),
    ("spec", ("layers", "specgraph", "supplied", "paramspec", "speclayers", "weightgeometry", "spec", "specfiles")),
    ("network", ("network",)),
    ("run", ("propagate", "probes", "stats", "threads")),
    ("theory", ("theory",)),
    ("checks", ("checks",)),
    ("report", ("report", "baseline")),
    ("pipeline", ("pipeline", "seeds", "compare", "recommend", "specwriter")),
    ("importers", ("importers",)),
    ("reporters", ("reporters", "schema")),
    ("cli", ("config", "gate", "api", "cli", "__main__")),
)
RANK = {module: rank for rank, (_, modules) in enumerate(STAGES) for module in modules}


def _unit(path: Path) -> str:
    """The stage unit of a file: a top-level module, or the package (layers, checks, reporters) it is in."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set:
    """The package's units that `path` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "initdiag":
                found |= {alias.name for alias in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("initdiag.")}
    return found - {"__version__"}


FILES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or path.parent != PACKAGE)


def stage_problems(path: Path) -> list[str]:
    unit = _unit(path)
    if unit not in RANK:
        return [f"{path.relative_to(PACKAGE.parent)}: '{unit}' has no stage in tests/test_stages.py STAGES"]
    problems = []
    for imported in sorted(_imports(path) - {unit}):
        if imported not in RANK:
            problems.append(f"{path.relative_to(PACKAGE.parent)} imports '{imported}', which has no stage")
        elif RANK[imported] > RANK[unit]:
            problems.append(f"{path.relative_to(PACKAGE.parent)} ({STAGES[RANK[unit]][0]}) imports '{imported}', "
                            f"of the later stage {STAGES[RANK[imported]][0]}")
    return problems


@pytest.mark.parametrize("path", FILES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_module_imports_from_a_later_stage(path):
    assert stage_problems(path) == []


def test_an_import_from_a_later_stage_is_named(tmp_path, monkeypatch):
    module = PACKAGE / "spec.py"
    source = module.read_text(encoding="utf-8") + "\n\ndef _late():\n    from initdiag import checks\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source if self == module else
                        Path.open(self, encoding=encoding).read())
    assert stage_problems(module) == ["initdiag/spec.py (spec) imports 'checks', of the later stage checks"]


def test_a_module_without_a_stage_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("test_stages.RANK", {key: value for key, value in RANK.items() if key != "theory"})
    assert stage_problems(PACKAGE / "theory.py") == ["initdiag/theory.py: 'theory' has no stage in tests/test_stages.py STAGES"]
