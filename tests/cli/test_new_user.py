"""What a new user meets first (issue 13): output folders that do not exist yet, render on
every deconvviz file (the same PNG bytes as when written), unlabelled images called
unlabelled, unreadable --image files skipped when asked."""

from __future__ import annotations

import json

import h5py
import numpy as np
from click.testing import CliRunner
from PIL import Image

from deconvviz import load_model
from deconvviz.cli import main
from deconvviz.data.resolve import resolve_source
from deconvviz.store.h5 import stamp


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_command_that_writes_creates_its_folder(tiny_checkpoint, tmp_path):
    r = run("filters", "--model", tiny_checkpoint, "--out", tmp_path / "f" / "new" / "f.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f" / "new" / "f.png").is_file() and (tmp_path / "f/new/f.h5").is_file()
    r = run(
        "occlusion",
        "--model",
        tiny_checkpoint,
        "--size",
        "16",
        "--stride",
        "16",
        "--out",
        tmp_path / "o" / "new" / "o.png",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "new" / "o.h5").is_file()
    r = run(
        "project",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--feature",
        "0",
        "--top",
        "2",
        "--out",
        tmp_path / "p" / "new",
    )
    assert r.exit_code == 0, r.output
    h5 = tmp_path / "p" / "new" / "layer1_feature0_max_deconvnet_switches.h5"
    r = run("render", h5, "--out", tmp_path / "r" / "new")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "new" / (h5.stem + ".png")).read_bytes() == h5.with_suffix(
        ".png"
    ).read_bytes()
    r = run(
        "report",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--limit",
        "20",
        "--top",
        "2",
        "--quiet",
        "--out",
        tmp_path / "rep" / "new",
    )
    assert r.exit_code == 0, r.output
    r = run("render", tmp_path / "rep" / "new" / "report.h5", "--out", tmp_path / "rr" / "new")
    assert r.exit_code == 0, r.output
    written = sorted(
        p.relative_to(tmp_path / "rep" / "new") for p in (tmp_path / "rep" / "new").rglob("*.png")
    )
    assert len(written) == 33  # the grid + 32 features
    assert written == sorted(
        p.relative_to(tmp_path / "rr" / "new") for p in (tmp_path / "rr" / "new").rglob("*.png")
    )
    for rel in written:  # report -> render: same bytes
        assert (tmp_path / "rr" / "new" / rel).read_bytes() == (
            tmp_path / "rep" / "new" / rel
        ).read_bytes(), rel
    # A folder that cannot be made is one line, as before.
    (tmp_path / "file").write_text("x")
    r = run("occlusion", "--model", tiny_checkpoint, "--out", tmp_path / "file" / "o.png")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith(f"Error: cannot create output folder {tmp_path / 'file'}")


def test_render_names_the_files_it_redraws(tmp_path):
    path = tmp_path / "occ.h5"
    with h5py.File(path, "w") as f:
        stamp(f, "deconvviz-occlusion", 1)
    r = run("render", path, "--out", tmp_path / "o")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"Error: {path} is a deconvviz-occlusion file; render redraws deconvviz-report and "
        "deconvviz-projection files (others are drawn when written)"
    ]
    assert not (tmp_path / "o").exists()


def test_an_unlabelled_image_is_captioned_unlabelled(tiny_checkpoint, tmp_path):
    from deconvviz.render.figure_parts import class_name
    from deconvviz.runs.figures_run import across_images_figure

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    source = resolve_source(str(tmp_path / "x.png"))
    assert source.labels.tolist() == [-1] and class_name(source, -1) == "unlabelled"
    fig, _, _ = across_images_figure(load_model(tiny_checkpoint), source, [0], 1, 0)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles and titles[0].startswith("#0 unlabelled\nmax ")
    r = run(
        "project",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--feature",
        "0",
        "--image",
        tmp_path / "x.png",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "p" / "layer1_feature0_max_deconvnet_switches.h5") as f:
        assert f["label"][()].tolist() == [-1]


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
