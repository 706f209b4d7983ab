"""``deconvviz report`` under torchrun: 2 gloo processes give exactly the 1-process report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from deconvviz.data.builtin import synthetic_images

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["DECONVVIZ_CACHE"] = str(tmp_path / "cache")
    # torchrun sets one thread per worker; the 1-process run uses the same, so that the
    # two runs do the same arithmetic.
    env["OMP_NUM_THREADS"] = "1"
    return env


def _gloo_setup(tmp_path, n: int, classes: int):
    """Skip without gloo; an ImageFolder of ``n`` images in ``classes`` classes and a
    launcher script for torchrun: ``(data folder, launcher)``."""
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    from PIL import Image

    data = tmp_path / "data"
    images, _ = synthetic_images(n, seed=3)
    for i in range(n):
        d = data / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    launcher = tmp_path / "launch.py"
    launcher.write_text("from deconvviz.cli import main\nmain()\n")
    return data, launcher


def one_and_two_processes(tmp_path, launcher, args):
    """Run ``args`` in one process (to ``tmp_path/one``) and under torchrun with two
    (to ``tmp_path/two``); both must succeed. Returns the torchrun run."""
    env = _env(tmp_path)
    one = subprocess.run(
        [sys.executable, str(launcher)] + args + ["--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(launcher),
        ]
        + args
        + ["--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    return two


def test_two_gloo_processes_match_one_process(tiny_checkpoint, tmp_path):
    data, launcher = _gloo_setup(tmp_path, 60, 3)
    args = [
        "report",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(data),
        "--top",
        "4",
        "--batch-size",
        "8",
        "--no-png",
        "--quiet",
    ]
    two = one_and_two_processes(tmp_path, launcher, args)
    # Only rank 0 writes and prints.
    assert two.stdout.count("wrote ") == 1, two.stdout
    with (
        h5py.File(tmp_path / "one" / "report.h5") as a,
        h5py.File(tmp_path / "two" / "report.h5") as b,
    ):
        assert b.attrs["world_size"] == 2 and a.attrs["world_size"] == 1
        assert b.attrs["num_images"] == a.attrs["num_images"] == 60
        assert list(a.keys()) == list(b.keys()) == ["images", "layer1", "layer2"]
        names = []  # every dataset, the layers' feature statistics (maxima, AUROC, ...) too
        a.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        assert "layer2/statistics/maxima" in names and "layer1/statistics/auroc" in names
        for name in names:
            x, y = a[name][()], b[name][()]
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert not list((tmp_path / "two").glob(".*part"))


def test_a_failing_rank_stops_every_rank_with_one_line(tiny_checkpoint, tmp_path):
    """Rank 0 fails while writing (report.h5 is a folder): every rank says so in one line,
    exits non-zero, and nothing half-written is left."""
    data, launcher = _gloo_setup(tmp_path, 12, 2)
    out = tmp_path / "out"
    (out / "report.h5").mkdir(parents=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(launcher),
            "report",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(data),
            "--top",
            "2",
            "--batch-size",
            "4",
            "--no-png",
            "--quiet",
            "--out",
            str(out),
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode != 0
    ours = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error:")]
    assert sorted(ours) == sorted(
        [
            f"Error: cannot write {out / 'report.h5'}: Is a directory",
            "Error: process 0 of this torchrun job failed during the report (see its error); "
            "process 1 stopped too",
        ]
    ), r.stderr[-3000:]
    assert "terminate called" not in r.stderr
    # Nothing half-written; each rank's finished scan and the finished layers (all of
    # them: renaming into place failed) are kept for --resume.
    assert sorted(p.name for p in out.iterdir()) == [
        ".scan-state.rank0of2.maxima0.f16",
        ".scan-state.rank0of2.maxima1.f16",
        ".scan-state.rank0of2.pt",
        ".scan-state.rank1of2.maxima0.f16",
        ".scan-state.rank1of2.maxima1.f16",
        ".scan-state.rank1of2.pt",
        "report.h5",
        "report.h5.partial",
    ]
    assert not list((out / "report.h5").iterdir())
