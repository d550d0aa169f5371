"""The package's layering: every import points down, files and functions stay small.

Layers, bottom to top (a module may import its own layer and the layers below it):

    0  errors, config, utils          shared foundations
    1  functional                     pure batched ops (no RNG, no state)
    2  data                           readers, writers, datasets, banks
    3  compose, render                params, samplers, deterministic apply
    4  models                         networks and target adapters (no file I/O)
    5  metrics                        scores of data under a model
    6  report                         figures, tables, HTML (no training)
    7  loops                          training logic
    8  experiments                    paper protocols as library code
    9  jobs                           what a command runs end to end (a job may run an experiment: the demo)
   10  cli                            parses, builds a config, calls a job

Imports inside functions count too (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthloop"
LAYERS = {
    "errors": 0, "config": 0, "utils": 0, "__init__": 0,
    "functional": 1,
    "data": 2,
    "compose": 3, "render": 3,
    "models": 4,
    "metrics": 5,
    "report": 6,
    "loops": 7,
    "experiments": 8,
    "jobs": 9,
    "cli": 10,
}  # fmt: skip
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 120
SIBLINGS_APART = {frozenset({"compose", "render"})}
"""Same-layer packages that must not import each other."""


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "synthloop":
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "synthloop"]
    return out


def _violations() -> list[str]:
    bad = []
    for path in _modules():
        src = _top(path)
        for line, module in _imports(path):
            parts = module.split(".")
            if len(parts) < 2:
                continue  # `import synthloop` / `from synthloop import __version__`: the root
            dst = parts[1]
            if dst not in LAYERS or src not in LAYERS:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (unknown layer)")
            elif LAYERS[dst] > LAYERS[src] or (src != dst and frozenset({src, dst}) in SIBLINGS_APART):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src} imports {module}")
    return bad


def test_every_import_points_down():
    assert _violations() == []


def test_every_top_level_name_has_a_layer():
    names = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert names <= set(LAYERS), names - set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_small(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_FILE_LINES, f"{path.name}: {len(lines)} lines"
    long = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({n} lines)")
    assert not long, f"{path.name}: {', '.join(long)}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule is live: a data module importing loops is reported."""
    fake = tmp_path / "synthloop"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from synthloop.loops.trainer import fit\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert [v.split(": ", 1)[1] for v in _violations()] == ["data imports synthloop.loops.trainer"]
