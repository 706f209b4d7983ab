"""--skip-unreadable: one summary line, the files recorded in the provenance; without it
the first unreadable image stops the run with one line, and nothing is written."""

from __future__ import annotations

import json

import h5py
import numpy as np
from click.testing import CliRunner
from PIL import Image

from deconvviz.cli import main
from deconvviz.data.builtin import synthetic_images


def _folder(root, n=20, broken=("c0/04.png", "c0/10.png", "c1/13.png", "c1/17.png")):
    images, _ = synthetic_images(n, seed=7)
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    for b in broken:
        (root / b).write_bytes(b"not an image")
    return [str(root / b) for b in sorted(broken)]


def test_skip_unreadable_in_a_report(tiny_checkpoint, tmp_path):
    bad = _folder(tmp_path / "imgs")
    base = [
        "report",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(tmp_path / "imgs"),
        "--top",
        "2",
        "--layer",
        "1",
        "--no-png",
        "--quiet",
        "--out",
        str(tmp_path / "r"),
    ]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 1
    [line] = res.output.strip().splitlines()
    assert line.startswith(f"Error: cannot read image {bad[0]}: ")
    assert line.endswith("; --skip-unreadable leaves such files out")
    assert not (tmp_path / "r").exists()  # the refused run leaves no folder behind

    res = CliRunner().invoke(main, base + ["--skip-unreadable", "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert (
        f"deconvviz: skipped 4 unreadable image(s) of 20: {bad[0]}, {bad[1]}, {bad[2]}, ..."
        in res.output
    )
    with h5py.File(tmp_path / "r" / "report.h5") as f:
        assert f.attrs["num_images"] == 16
        assert json.loads(f.attrs["skipped_files"]) == bad
        paths = [p.decode() for p in f["images/path"][()]]
    assert not set(paths) & set(bad)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_project_skips_an_unreadable_image_file_when_asked(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    args = [
        "project",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--feature",
        "0",
        "--image",
        tmp_path / "bad.png",
        "--image",
        tmp_path / "ok.png",
        "--out",
        tmp_path / "p",
    ]
    r = run(*args)
    assert r.exit_code == 1 and r.output.startswith(
        f"Error: cannot read image {tmp_path / 'bad.png'}"
    )
    r = run(*args, "--skip-unreadable")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "p" / "layer1_feature0_max_deconvnet_switches.h5") as f:
        assert [p.decode() for p in f["image_path"][()]] == [str(tmp_path / "ok.png")]
        assert json.loads(f.attrs["skipped_files"]) == [str(tmp_path / "bad.png")]
