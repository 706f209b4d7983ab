"""``deconvviz filters`` and ``deconvviz train --clip-filter-rms`` through the command line."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deconvviz.cli import main
from deconvviz.models.constraints import filter_rms


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_filters_png_and_h5(tmp_path, tiny_checkpoint):
    r = run("filters", "--model", tiny_checkpoint, "--out", tmp_path / "f.png")
    assert r.exit_code == 0, r.output
    assert f"wrote {tmp_path / 'f.png'}" in r.output and f"wrote {tmp_path / 'f.h5'}" in r.output
    assert "never fire" not in r.output  # no --data: no scan
    with Image.open(tmp_path / "f.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    weight = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]["features.0.weight"]
    direct = weight.double().pow(2).mean(dim=(1, 2, 3)).sqrt().numpy()
    with h5py.File(tmp_path / "f.h5") as f:
        assert f.attrs["format"] == "deconvviz-figure" and f.attrs["layer"] == 1
        np.testing.assert_allclose(f["rms"][:], direct, rtol=1e-12)
        assert list(f["order"][:]) == list(np.argsort(-direct, kind="stable"))
        assert f["weight"].shape == (32, 3, 5, 5) and "dead" not in f
    top = int(np.argmax(direct))
    assert f"largest RMS {top}: {direct[top]:.4f}" in r.output


def test_filters_lists_features_that_never_fire(tmp_path, tiny_checkpoint):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["state_dict"]["features.3.bias"][[7, 2]] = -1e6  # never fire
    torch.save(payload, tmp_path / "dead.pt")
    r = run(
        "filters",
        "--model",
        tmp_path / "dead.pt",
        "--layer",
        "2",
        "--data",
        "builtin",
        "--limit",
        "40",
        "--out",
        tmp_path / "f2.png",
    )
    assert r.exit_code == 0, r.output
    assert "features that never fire on builtin:test (40 images): 2, 7" in r.output
    with h5py.File(tmp_path / "f2.h5") as f:
        assert list(f["dead"][:]) == [2, 7] and f["max_activation"].shape == (64,)
        assert f["weight"].shape == (64, 32, 5, 5) and f.attrs["num_images"] == 40


@pytest.mark.parametrize(
    "args,message",
    [
        (["--layer", "3"], "Error: layer 3 is out of range: this network has layers 1..2"),
        (["--data", "/no/such/data"], "Error: data path /no/such/data does not exist"),
    ],
)
def test_filters_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_checkpoint, args, message):
    r = run("filters", "--model", tiny_checkpoint, "--out", tmp_path / "o" / "f.png", *args)
    assert r.exit_code == 1, r.output
    assert r.output.strip() == message or (
        r.output.strip().startswith(message) and len(r.output.strip().splitlines()) == 1
    )
    assert not (tmp_path / "o").exists()


def test_train_clip_filter_rms_is_applied_and_recorded(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "d" / split / name).mkdir(parents=True)
            for k in range(4):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "d" / split / name / f"{k}.png"
                )
    r = run(
        "train",
        "--data",
        tmp_path / "d",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--quiet",
        "--clip-filter-rms",
        "0.02",
        "--out",
        tmp_path / "m.pt",
    )
    assert r.exit_code == 0, r.output
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ck["training"]["clip_filter_rms"] == 0.02
    for key in ("features.0.weight", "features.3.weight"):
        assert float(filter_rms(ck["state_dict"][key]).max()) <= 0.02 * (1 + 1e-6)
    r = run("train", "--clip-filter-rms", "0", "--out", tmp_path / "n.pt")
    assert r.exit_code == 2 and "--clip-filter-rms" in r.output
