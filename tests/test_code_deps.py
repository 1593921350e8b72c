"""Every code file a stage runs is a dependency of that stage in dvc.yaml.

DVC reruns a stage only when one of its declared deps changes. A library module the stage imports
(directly or through other modules, at module level or inside a function) but that dvc.yaml does not
list would let an edit to it leave a stale cached result. The import graph is read statically from
the sources, so the check needs no data and runs in a second.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Plumbing that decides how a stage runs, not what it computes: params parsing and the scoped view,
# the file map, tracking, progress bars, atomic IO and the package root. Listing them would rerun the
# whole pipeline on every new param or log line.
PLUMBING = {"semdepth/__init__.py", "semdepth/config.py", "semdepth/layout.py", "semdepth/tracking.py",
            "semdepth/progress.py", "semdepth/io.py", "semdepth/runtime.py", "stages/__init__.py",
            "stages/_common.py"}


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=None)
def _imports(path: Path) -> frozenset[Path]:
    """Project files imported anywhere in `path` (module level or inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*parts, mod] if mod else parts)
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    out = set()
    for name in names:
        if not name.startswith(("semdepth", "stages")):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
            f = _module_file(".".join(parts[:i]))
            if f is not None:
                out.add(f)
    return frozenset(out)


def _only_docstring(path: Path) -> bool:
    """An `__init__.py` holding nothing but a docstring cannot change a result."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imports(f) - seen)
    return seen


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(_stages()))
def test_every_imported_project_file_is_a_dvc_dependency(name: str) -> None:
    deps = [d for d in _stages()[name].get("deps", []) if isinstance(d, str)]
    covered = [REPO / d for d in deps]
    missing = []
    for f in sorted(closure(REPO / "stages" / f"{name}.py")):
        rel = f.relative_to(REPO).as_posix()
        if rel in PLUMBING or (f.name == "__init__.py" and _only_docstring(f)):
            continue
        if not any(f == c or c in f.parents for c in covered):
            missing.append(rel)
    assert not missing, f"dvc.yaml stage {name}: add these deps (the stage imports them): {missing}"


def test_the_import_graph_sees_function_level_imports(tmp_path) -> None:
    """The check is only as good as its reading of imports: a lazy import inside a function counts."""
    stage = REPO / "stages" / "filter.py"
    files = {f.relative_to(REPO).as_posix() for f in closure(stage)}
    assert "stages/filter.py" in files and any(f.startswith("semdepth/geometry/") for f in files)
