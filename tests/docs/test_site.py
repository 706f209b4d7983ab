"""The documentation site builds in strict mode (issue 21): a broken link, a missing anchor
or a reference that does not resolve is a failure with MkDocs' own message, and the CLI and
API references are generated from the code, not written by hand."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip(
    "mkdocs",
    reason="the docs tools are not installed (pip install -e '.[docs]'; "
    "the test extra brings them)",
)
for _plugin in ("material", "mkdocstrings", "mkdocs_click"):
    pytest.importorskip(_plugin, reason=f"{_plugin} is not installed (pip install -e '.[docs]')")


def _build(root: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(root / "mkdocs.yml"),
            "-d",
            str(out),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = _build(REPO, out)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def test_cli_reference_is_generated_from_every_command(site):
    from deconvviz.cli import main

    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        assert f"deconvviz {name}" in page, name
        for p in command.params:
            for opt in p.opts:
                if opt.startswith("--"):
                    assert opt in page, (name, opt)


def test_api_reference_is_generated_from_the_docstrings(site):
    import deconvviz
    from deconvviz.runs.report_run import build_report

    page = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for name in deconvviz.__all__:
        if name != "__version__":
            where = getattr(deconvviz, name).__module__
            assert f'id="{where}.{name}"' in page, (where, name)
    first_line = build_report.__doc__.strip().splitlines()[0]
    assert 'id="deconvviz.runs.report_run.build_report"' in page
    assert first_line.split("``")[0].strip()[:30] in page


def test_every_page_is_in_the_site(site):
    for md in (REPO / "docs").rglob("*.md"):
        rel = md.relative_to(REPO / "docs").with_suffix("")
        html = site / ("index.html" if rel.name == "index" else rel / "index.html")
        assert html.is_file(), md


def test_a_broken_link_fails_the_build(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    page = root / "docs" / "method.md"
    page.write_text(
        page.read_text() + "\nSee [the rules](networks-and-data.md#no-such-anchor) "
        "and [a page](no-such-page.md).\n"
    )
    r = _build(root, tmp_path / "site")
    assert r.returncode != 0
    said = r.stdout + r.stderr
    assert "no-such-page.md" in said and "no-such-anchor" in said
    assert "Aborted with 2 warnings in strict mode" in said
