"""The installed package is found from anywhere, also from the folder that holds a clone
named ``deconvviz`` (issue 13): an empty namespace package must not shadow it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest


def test_import_from_the_folder_holding_the_clone(tmp_path):
    try:
        importlib.metadata.distribution("deconvviz")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("deconvviz is not installed (pip install -e . --config-settings "
                    "editable_mode=compat, as the README says)")
    (tmp_path / "deconvviz").mkdir()           # what `git clone .../deconvviz` leaves here
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import deconvviz; print(deconvviz.load_model.__name__, deconvviz.__version__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == "load_model"
    r = subprocess.run([sys.executable, "-m", "deconvviz", "--version"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "deconvviz, version" in r.stdout, r.stderr[-2000:]
