"""The notebook route (issue 20): ``examples/explore_report.ipynb`` executed in a real
Jupyter kernel (nbclient, ipykernel), its outputs checked: a report, a layer, a feature
and a projection each display as HTML with their images embedded."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="needs the test extra: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="needs the test extra: pip install -e '.[test]'")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "explore_report.ipynb"
REPO = NOTEBOOK.parents[1]


def _html(cell) -> str:
    return "".join(
        o.get("data", {}).get("text/html", "")
        for o in cell.outputs
        if o.output_type in ("execute_result", "display_data")
    )


def _text(cell) -> str:
    return "".join(
        o.get("data", {}).get("text/plain", "")
        for o in cell.outputs
        if o.output_type == "execute_result"
    )


def _pngs(html: str):
    """The embedded PNGs of an HTML output (decoded), each must be a real PNG."""
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [base64.b64decode(b) for b in found]


def test_the_example_notebook_runs_in_a_kernel_and_displays_inline(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel imports this checkout (its own process inherits the environment).
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o.output_type != "error" for c in code for o in c.outputs)
    report_cell, layer_cell, feature_cell, features_for_cell, projection_cell = code
    # The report: its provenance and its layer's tiles, embedded; a short text repr.
    html = _html(report_cell)
    assert "deconvviz report" in html and "builtin:test (300 images)" in html
    assert _text(report_cell).startswith(
        "Report('outputs/notebook-report/report.h5': layer2 (64 features)"
    )
    assert (tmp_path / "outputs" / "notebook-report" / "report.h5").is_file()
    pngs = _pngs(html)
    assert len(pngs) == 2 * 16 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    # The layer: 48 strongest features, a projection and a patch each, captioned with labels.
    html = _html(layer_cell)
    assert len(_pngs(html)) == 2 * 48 and "the 48 strongest of 64 features shown" in html
    # The feature: its 4 tiles side by side, its label, AUROC bars for the 10 classes and
    # the histogram of its maxima.
    html = _html(feature_cell)
    assert len(_pngs(html)) == 2 * 4 and "detects:</b>" in html and "<svg" in html
    assert html.count('class="auroc-row') == 10
    label = re.search(r"detects:</b> ([^<(]+) \(AUROC", html).group(1)
    assert f"'{label}'" in _text(features_for_cell)
    # The projection of its top images: a tile grid, one picture per seed.
    html = _html(projection_cell)
    assert "deconvnet projections of layer 2: 4 seeds" in html and len(_pngs(html)) == 4


_SHELL_PROBE = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
import deconvviz
heavy = sorted(m for m in ("torch", "torchvision", "h5py") if m in sys.modules)
import torch
model = deconvviz.load_model()
data = deconvviz.load_data("builtin", model)
proj = deconvviz.deconvolve(model, torch.stack([data[i][0] for i in range(3)]), layer=2, feature=9)
fmt, _ = shell.display_formatter.format(proj)
print(json.dumps({"heavy": heavy, "html": fmt.get("text/html", "")}))
"""


def test_importing_deconvviz_in_ipython_imports_no_torch_and_projections_display(tmp_path):
    """The Projection display hook is registered by name when deconvviz is imported
    under IPython: no torch until a projection is made, which then shows as its grid."""
    import json
    import subprocess
    import sys

    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    done = subprocess.run(
        [sys.executable, "-c", _SHELL_PROBE],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert "deconvnet projections of layer 2: 3 seeds" in out["html"]
    assert len(_pngs(out["html"])) == 3
