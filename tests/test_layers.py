"""Dependencies point one way: eval -> training -> retrievers -> ricl core.

Every module's imports are read from its syntax tree (module level and inside
functions, plus ``importlib.import_module("...")`` with a literal name), so an
arrow that runs the wrong way fails here whether or not it is ever executed. The
core reaches up only through the import strings in ``ricl/registry.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"ricl": 0, "retrievers": 1, "training": 2, "eval": 3}
STUDIES = ("eval.experiments", "eval.benchmarks")
REGISTRY = ROOT / "ricl" / "registry.py"
_MODULE_STRING = re.compile(r"^(ricl|retrievers|training|eval)(\.\w+)*(:\w+)?$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``."""
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def wrong_way(source: str, module: str, path: Path | None = None) -> list[str]:
    """Every import in ``source`` (the text of ``module``) that runs against the layers."""
    layer = LAYERS[module.split(".")[0]]
    is_study = module.startswith(STUDIES)
    problems = []
    for line, name in imported_names(source, module):
        top = name.split(".")[0]
        if top in LAYERS and LAYERS[top] > layer:
            problems.append(f"{module}:{line} imports {name} (a higher layer)")
        if name.startswith(STUDIES) and not is_study:
            problems.append(f"{module}:{line} imports the study/benchmark {name}")
    if layer < LAYERS["eval"] and path != REGISTRY:
        # import strings naming a higher layer belong in the registry only
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _MODULE_STRING.match(node.value) \
                    and LAYERS[node.value.split(".")[0].split(":")[0]] > layer:
                problems.append(f"{module}:{node.lineno} names {node.value!r} outside ricl/registry.py")
    return problems


def _library_files() -> list[Path]:
    return sorted(p for package in LAYERS for p in (ROOT / package).rglob("*.py"))


def test_no_import_runs_against_the_layers():
    problems = [problem for path in _library_files()
                for problem in wrong_way(path.read_text(encoding="utf-8"), _module_name(path), path)]
    assert problems == []


@pytest.mark.parametrize("module, source", [
    ("ricl.builder", "from retrievers import make_retriever\n"),
    ("ricl.builder", "def f():\n    import training.train\n"),
    ("ricl.cli", "import importlib\nimportlib.import_module('eval.commands')\n"),
    ("ricl.cli", "PLUGIN = 'eval.commands:register'\n"),
    ("training.commands", "def f():\n    from eval.suites import load_suite\n"),
    ("retrievers.dense", "from training import train_retriever\n"),
    ("eval.grid", "from eval.experiments.headline import run\n"),
    ("eval.experiments.position", "from . import nothing\nfrom ..benchmarks import scale\n"),
])
def test_the_check_catches_each_kind_of_wrong_way_arrow(module, source):
    problems = wrong_way(source, module)
    if module.startswith(STUDIES):  # studies may import studies; here it is allowed
        assert problems == []
    else:
        assert problems, f"{source!r} in {module} should have been flagged"


def test_allowed_arrows_pass():
    assert wrong_way("from ricl.data import Corpus\nimport numpy\n", "training.train") == []
    assert wrong_way("from training.feedback import score_candidates\n", "eval.grid") == []
    assert wrong_way("from eval.benchmarks.retrieval import timed\n", "eval.benchmarks.scale") == []
