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
