"""The library's layout by question: which packages may import which (read with ``ast``).

``when/`` decides from the training history alone, so it imports neither ``where/`` nor
``how/``; ``where/`` and ``how/`` meet only in a plan, so neither imports the other; models
and operators are usable without the training loop. A violation names the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "growcore"
QUESTIONS = ("when", "where", "how", "ops", "stats")
TRAINING = ("growcore.train", "growcore.runner", "growcore.chapters", "growcore.experiments",
            "growcore.plan", "growcore.registry")
FORBIDDEN = {
    "when": ("growcore.where", "growcore.how", *TRAINING),
    "where": ("growcore.how", *TRAINING),
    "how": ("growcore.where", *TRAINING),
    "ops": ("growcore.where", "growcore.how", "growcore.when", *TRAINING),
    "stats": ("growcore.where", "growcore.how", "growcore.when", *TRAINING),
    "models": ("growcore.where", "growcore.how", "growcore.when", "growcore.ops",
               "growcore.stats", *TRAINING),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file, absolute module names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports would hide the layering from this test
                found.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                found.append((node.lineno, node.module))
    return found


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layering(package):
    files = sorted((PACKAGE / package).glob("*.py"))
    assert files, f"growcore/{package} has no modules"
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
           for path in files for line, module in imports(path)
           if module.startswith(".") or any(_matches(module, p) for p in FORBIDDEN[package])]
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_every_question_is_a_package_and_no_old_module_remains():
    for question in QUESTIONS:
        assert (PACKAGE / question / "__init__.py").is_file(), question
    old = ["when.py", "where.py", "how.py", "ops.py", "widen.py", "blocks.py", "gradmax.py",
           "nagn.py", "fragrow.py", "optim.py"]
    assert not [name for name in old if (PACKAGE / name).exists()]


def test_the_checker_sees_a_violation(tmp_path):
    """The test above can fail: a module that imports a forbidden package is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from growcore.how.width import GradMax\nimport growcore.train\n")
    found = [m for _, m in imports(bad)]
    assert any(_matches(m, "growcore.how") for m in found)
    assert any(_matches(m, "growcore.train") for m in found)


def test_notebooks_define_no_functions_or_classes():
    """Library code lives in growcore: no ``def`` or ``class`` in a notebook's code cells
    (an exercise's solution may still write a lambda, the point of the exercise)."""
    import json

    found = []
    for path in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            tree = ast.parse("".join(cell["source"]))
            found += [f"{path.name} cell {cell.get('id')}: {node.name}" for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not found, "functions defined in notebooks:\n" + "\n".join(found)
