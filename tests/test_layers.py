"""The layers of CONTRIBUTING.md's table: no recipe imports another, and nothing below the recipes imports one
(their configs aside, which load no torch); only the commands above them, the benches and the demo, may."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalign"
ABOVE_THE_RECIPES = ("bench/", "demo.py")


def recipe_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "frugalign.recipes":
            names |= {f"frugalign.recipes.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("frugalign.recipes."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("frugalign.recipes.")}
    return names


def test_only_the_benches_and_the_demo_import_a_recipe():
    offenders = {}
    for path in SRC.rglob("*.py"):
        where = path.relative_to(SRC).as_posix()
        if where.startswith(ABOVE_THE_RECIPES):
            continue
        imported = recipe_imports(path) - {"frugalign.recipes.configs"}
        if imported:
            offenders[where] = sorted(imported)
    assert offenders == {}
