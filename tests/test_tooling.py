"""The tidiness tools (issue 21): ruff lints and formats the tree with the settings in
pyproject.toml, the pre-commit hook runs the same ruff as CI, and CI runs every linter after
the README's test command, failing with the tool's own message."""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

needs_ruff = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None,
    reason="ruff is not installed (pip install -e '.[lint]')",
)


def _ruff(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _pinned_ruff() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pins = [
        line.strip()
        for line in cfg["options.extras_require"]["lint"].splitlines()
        if line.strip().startswith("ruff")
    ]
    assert len(pins) == 1 and pins[0].startswith("ruff=="), pins
    return pins[0][len("ruff==") :]


def test_pre_commit_runs_the_ruff_that_ci_installs():
    config = (REPO / ".pre-commit-config.yaml").read_text()
    hook = re.search(r"repo: https://github.com/astral-sh/ruff-pre-commit\s+rev: v(\S+)", config)
    assert hook, "no ruff-pre-commit hook in .pre-commit-config.yaml"
    assert hook.group(1) == _pinned_ruff()
    for hook_id in ("ruff-check", "ruff-format", "mypy"):
        assert re.search(rf"- id: {hook_id}\b", config), hook_id


@needs_ruff
def test_the_installed_ruff_is_the_pinned_one():
    r = _ruff("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ruff", _pinned_ruff()]


def test_ci_lints_after_the_readme_test_command():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    tests = lines.index(
        "python -m pip install -e '.[test]' --config-settings editable_mode=compat "
        "&& python -m pytest -q"
    )
    after = lines[tests + 1 :]
    for command in ("ruff check .", "ruff format --check .", "mypy"):
        assert command in after, f".ci/run does not run {command!r} after the tests"
    assert after[-1] == 'exit "$suite"'  # a failed test still fails CI


@needs_ruff
def test_the_tree_is_lint_clean_and_formatted():
    for args in (("check", "."), ("format", "--check", ".")):
        r = _ruff(*args)
        assert r.returncode == 0, f"ruff {' '.join(args)}:\n{r.stdout[-4000:]}{r.stderr[-2000:]}"


@needs_ruff
def test_ruff_fails_on_a_lint_error_with_its_own_message(tmp_path):
    # The repository's settings, on a file with an unused import and a too-long line.
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text(
        "import os\n\nVALUE = " + repr("x" * 100) + "\n", encoding="utf-8"
    )
    r = _ruff("check", "bad.py", cwd=tmp_path)
    assert r.returncode == 1
    assert "F401" in r.stdout and "`os` imported but unused" in r.stdout
    assert "E501" in r.stdout and "Line too long (110 > 100)" in r.stdout
    r = _ruff("format", "--check", "bad.py", cwd=tmp_path)
    assert r.returncode == 1
    assert "1 file would be reformatted" in r.stdout  # single quotes: the format says double
