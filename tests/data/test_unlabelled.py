"""An image without a label (a single file, not in a class folder) is ``unlabelled``: label
-1 in the source and in the files written, and so captioned in the figures."""

from __future__ import annotations

import h5py
import numpy as np
from click.testing import CliRunner
from PIL import Image

from deconvviz import load_model
from deconvviz.cli import main
from deconvviz.data.resolve import resolve_source


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


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
