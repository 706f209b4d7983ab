"""Fixtures of the command-line tests."""

import sys

import pytest


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``write(name, source)``: a module of the user's own networks, importable as ``name``
    for ``--model name:function`` (a fresh import in every test)."""
    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)
    return write
