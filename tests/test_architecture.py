"""The house's rules: imports between the package's wings run one way (issue 8), and no two
modules share a name (issue 21).

    cli -> runs -> engine, store, render -> models, data -> errors, progress

``engine`` never imports ``store``, ``render`` or ``cli``; ``render`` never imports
``models`` or ``engine``. Checked over every import statement (also those inside
functions) with ``ast``, so a lazy import cannot hide a wrong-way dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deconvviz"

BASE = {"errors", "progress"}
# wing -> the wings it may import (besides itself and the root's __version__)
ALLOWED = {
    "errors": set(),
    "progress": set(),
    "data": BASE,
    "models": BASE | {"data"},
    "engine": BASE | {"models", "data"},
    "store": BASE | {"models", "data"},
    "render": BASE | {"store", "data"},
    "runs": BASE | {"explore", "engine", "store", "render", "models", "data"},
    "explore": BASE | {"store", "render", "data"},
    "api": BASE | {"models", "data"},
    "cli": BASE | {"runs", "explore", "engine", "store", "render", "models", "data", "api"},
}


def _wing(parts):
    """Wing of a module given as path parts under the package (``("engine", "deconvnet")``)."""
    return parts[0] if parts else ""


def _imports(path: Path, package: Path):
    """(line, target module parts, names) of every import of a deconvviz module in ``path``."""
    rel = path.relative_to(package).with_suffix("").parts
    pkg = rel[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg)[: len(pkg) - (node.level - 1)] if node.level > 1 else list(pkg)
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "deconvviz":
                target = node.module.split(".")[1:]
            else:
                continue
            yield node.lineno, tuple(target), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "deconvviz":
                    yield node.lineno, tuple(a.name.split(".")[1:]), []


def _violations(package: Path = PACKAGE):
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).with_suffix("").parts
        own = _wing(rel) if rel[0] != "__init__" else ""
        if own in ("", "__main__"):
            continue  # the package's face may re-export anything
        for line, target, names in _imports(path, package):
            wing = _wing(target)
            if not target:
                if set(names) <= {"__version__"}:
                    continue
                found.append(f"{path.relative_to(package)}:{line} imports the package root")
                continue
            if wing == own or wing in ALLOWED.get(own, set()):
                continue
            found.append(
                f"{path.relative_to(package)}:{line} ({own}) imports {'.'.join(target)} ({wing})"
            )
    return found


def test_every_module_belongs_to_a_known_wing():
    wings = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert wings - {"__init__", "__main__"} <= set(ALLOWED), wings - set(ALLOWED)


def test_imports_run_one_way():
    assert _violations() == []


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    # The rule must be able to fail: a fake engine module importing render is reported.
    fake = tmp_path / "deconvviz"
    (fake / "engine").mkdir(parents=True)
    (fake / "engine" / "bad.py").write_text(
        "def f():\n    from ..render.display import to_display\n"
    )
    (fake / "render").mkdir()
    (fake / "render" / "ok.py").write_text("from ..store.h5 import stamp\nfrom ..engine import x\n")
    assert _violations(fake) == [
        "engine/bad.py:2 (engine) imports render.display (render)",
        "render/ok.py:2 (render) imports engine (engine)",
    ]


@pytest.mark.parametrize("wing", ["engine", "models", "data", "store", "render", "cli", "runs"])
def test_each_wing_says_what_lives_there(wing):
    doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text()))
    assert doc and len(doc) > 80


def _collisions(package: Path = PACKAGE):
    """Module names (``__init__`` aside) that stand in more than one folder."""
    where = {}
    for path in sorted(package.rglob("*.py")):
        if path.name != "__init__.py":
            where.setdefault(path.stem, []).append(str(path.relative_to(package)))
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def test_no_two_modules_share_a_name():
    # A name says what a module is wherever it is read (a traceback, an import, a search):
    # the engine keeps the idea's bare name, the other wings add their job to it
    # (report_cmd, report_run, report_h5, occlusion_figure).
    assert _collisions() == {}


def test_the_name_check_sees_a_collision(tmp_path):
    for wing in ("cli", "store"):
        (tmp_path / wing).mkdir()
        (tmp_path / wing / "__init__.py").write_text("")
        (tmp_path / wing / "report.py").write_text("")
    (tmp_path / "store" / "report_h5.py").write_text("")
    assert _collisions(tmp_path) == {"report": ["cli/report.py", "store/report.py"]}


def _module_of(parts, package: Path):
    """The module file that ``parts`` (or its ``__init__``) names, as parts, or None."""
    if (package.joinpath(*parts).with_suffix(".py")).exists():
        return tuple(parts)
    if (package.joinpath(*parts) / "__init__.py").exists():
        return tuple(parts) + ("__init__",)
    return None


def _circles(package: Path = PACKAGE):
    """Strongly connected sets of modules (more than one) in the graph of every import
    statement, lazy and type-checking ones included: modules that import each other in a
    loop, directly or around."""
    edges = {}
    for path in sorted(package.rglob("*.py")):
        me = path.relative_to(package).with_suffix("").parts
        out = edges.setdefault(me, set())
        for _, target, names in _imports(path, package):
            if not target and set(names) <= {"__version__"}:
                continue  # the root's constant, set before it imports anything
            # ``from .pkg import module`` names a module; otherwise the target itself.
            subs = [_module_of(target + (n,), package) for n in names]
            found = [s for s in subs if s is not None] or [_module_of(target, package)]
            out.update(t for t in found if t is not None and t != me)
    index, low, stack, on, result = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append("/".join(w) + ".py")
                if w == v:
                    break
            if len(group) > 1:
                result.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(result)


def test_no_import_circle():
    # One idea has one home below the ideas that use it: no two modules need each other,
    # not even for a type annotation.
    assert _circles() == []


def test_the_circle_check_sees_a_circle(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "graph.py").write_text("from .run import execute\n")
    (tmp_path / "net" / "run.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .graph import Graph\n"
    )
    (tmp_path / "net" / "ops.py").write_text("from . import run\n")
    assert _circles(tmp_path) == [["net/graph.py", "net/run.py"]]
