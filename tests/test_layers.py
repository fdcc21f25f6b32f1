"""The floors of CONTRIBUTING.md's table: a module imports only from its own floor and the floors below it,
and no recipe imports another."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalign"

# lowest first; a name is a top-level module or folder of the package
FLOORS = [
    {"errors", "losses", "logprobs", "stats", "console", "results", "config", "options", "rundir", "plot", "bandit",
     "allocator"},
    {"engine", "models", "generation", "data", "serve"},
    {"training"},
    {"active"},
    {"tasks"},
    {"evaluate"},
    {"annotate"},
    {"recipes"},
    {"bench", "demo", "cli", "__main__", "__init__"},
]


def floor_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def imported_modules(path: Path) -> set[str]:
    """Every `frugalign.X...` this file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "frugalign":
            names |= {f"frugalign.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("frugalign."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("frugalign.")}
    return names


def level(name: str) -> int:
    found = next((i for i, floor in enumerate(FLOORS) if name in floor), None)
    assert found is not None, f"frugalign.{name} has no floor: add it to FLOORS and to CONTRIBUTING.md's table"
    return found


def test_every_module_has_a_floor():
    unplaced = {floor_name(path) for path in SRC.rglob("*.py")} - set().union(*FLOORS)
    assert unplaced == set(), "add each new module or folder to FLOORS here and to CONTRIBUTING.md's table"


def test_no_import_points_up_a_floor():
    offenders = {}
    for path in SRC.rglob("*.py"):
        here = floor_name(path)
        above = sorted(m for m in imported_modules(path) if level(m.split(".")[1]) > level(here))
        if above:
            offenders[path.relative_to(SRC).as_posix()] = above
    assert offenders == {}


def test_no_recipe_imports_another():
    offenders = {}
    for path in (SRC / "recipes").glob("*.py"):
        recipes = sorted(m for m in imported_modules(path) if m.startswith("frugalign.recipes"))
        if recipes:
            offenders[path.name] = recipes
    assert offenders == {}
