"""Skipped unreadable files leave a source whose indices, labels, paths and pixels
line up (read from the decode cache batch by batch, never all in memory), and every
output that read the source names the skipped files; transparent pixels of every
kind land on mid-grey."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deconvviz.cli import main
from deconvviz.data.resolve import resolve_source
from deconvviz.errors import DeconvvizError

BROKEN = ("a/02.png", "a/03.png", "b/07.png")


def _tree(root, n=10, size=8, broken=BROKEN):
    """An ImageFolder tree: images 0..n-1 alternate between classes a and b; the
    ``broken`` files hold no image. Returns {path: pixels (3, size, size)}."""
    rng = np.random.default_rng(3)
    pixels = {}
    for i in range(n):
        d = root / ("a" if i % 2 == 0 or i in (3,) else "b")
        d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{i:02d}.png")
        pixels[str(d / f"{i:02d}.png")] = arr.transpose(2, 0, 1)
    for b in broken:
        (root / b).write_bytes(b"no image here")
        pixels.pop(str(root / b), None)
    return pixels


def test_a_skipped_source_streams_from_the_cache_with_everything_aligned(tmp_path, capsys):
    good = _tree(tmp_path / "t")
    src = resolve_source(str(tmp_path / "t"), image_size=(8, 8), skip_unreadable=True)
    expect_paths = sorted(good)  # ImageFolder order
    assert src.paths == expect_paths and len(src) == len(good) == 7
    assert src.skipped == [str(tmp_path / "t" / b) for b in BROKEN]
    assert src.cache_file is not None  # still the cache file
    assert src.labels.tolist() == [0 if "/a/" in p else 1 for p in expect_paths]
    whole = src.read(0, len(src))
    for i, p in enumerate(expect_paths):  # pixels = PIL's own
        assert np.array_equal(whole[i].numpy(), good[p]), p
        assert torch.equal(src.read(i, i + 1)[0], whole[i])
    assert torch.equal(src.read(1, 5), whole[1:5])  # spans a left-out row
    buf = torch.empty((6, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(src.read(2, 7, out=buf), whole[2:7]) and torch.equal(buf[:5], whole[2:7])
    assert torch.equal(src.read_indices([6, 0, 3]), whole[[6, 0, 3]])
    err = capsys.readouterr().err
    assert (
        f"deconvviz: skipped 3 unreadable image(s) of 10: {src.skipped[0]}, "
        f"{src.skipped[1]}, {src.skipped[2]}\n"
    ) in err

    # The cache remembers the unreadable files: without skipping, the same one line as
    # before; with skipping, the same source again (pixels and fingerprint).
    with pytest.raises(DeconvvizError, match=f"^cannot read image {src.skipped[0]}: "):
        resolve_source(str(tmp_path / "t"), image_size=(8, 8))
    again = resolve_source(str(tmp_path / "t"), image_size=(8, 8), skip_unreadable=True)
    assert torch.equal(again.read(0, len(again)), whole)
    assert again.fingerprint == src.fingerprint
    full = resolve_source(str(tmp_path / "t"), image_size=(8, 8), skip_unreadable=True, workers=0)
    assert full.fingerprint == src.fingerprint


def test_a_source_of_only_unreadable_files_is_one_line(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"nothing")
    with pytest.raises(DeconvvizError, match="^no readable images in "):
        resolve_source(str(tmp_path / "d"), image_size=(8, 8), skip_unreadable=True)


def test_occlusion_filters_and_train_name_the_skipped_files(tiny_checkpoint, tmp_path):
    _tree(tmp_path / "loose" / "x", n=6, size=32, broken=("a/02.png",))
    loose = tmp_path / "loose" / "x" / "a"  # a folder of loose images
    bad = str(loose / "02.png")
    r = CliRunner().invoke(
        main,
        [
            "occlusion",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(loose),
            "--skip-unreadable",
            "--size",
            "16",
            "--stride",
            "16",
            "--out",
            str(tmp_path / "o" / "occ.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "o" / "occ.h5") as f:
        assert json.loads(f.attrs["skipped_files"]) == [bad]
    r = CliRunner().invoke(
        main,
        [
            "filters",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(loose),
            "--skip-unreadable",
            "--out",
            str(tmp_path / "f" / "filters.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "f" / "filters.h5") as f:
        assert json.loads(f.attrs["skipped_files"]) == [bad] and f.attrs["num_images"] == 3

    for split in ("train", "test"):
        _tree(
            tmp_path / "tt" / split,
            n=6,
            size=32,
            broken=(f"b/0{5 if split == 'train' else 1}.png",),
        )
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(tmp_path / "tt"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--quiet",
            "--skip-unreadable",
            "--out",
            str(tmp_path / "m.pt"),
        ],
    )
    assert r.exit_code == 0, r.output
    meta = torch.load(tmp_path / "m.pt", weights_only=True)
    assert meta["train_data"]["skipped_files"] == [str(tmp_path / "tt" / "train" / "b" / "05.png")]
    assert meta["test_data"]["skipped_files"] == [str(tmp_path / "tt" / "test" / "b" / "01.png")]
    assert meta["train_data"]["num_images"] == 5


@pytest.mark.parametrize("make", ["LA", "P"])
def test_every_kind_of_transparency_lands_on_mid_grey(tmp_path, make):
    if make == "LA":  # grey 200; alpha 255 left, 0 right, 128 in row 0
        arr = np.zeros((32, 32, 2), dtype=np.uint8)
        arr[..., 0] = 200
        arr[:, :16, 1] = 255
        arr[0, :, 1] = 128
        Image.fromarray(arr, "LA").save(tmp_path / "img.png")
    else:  # palette: colour 0 red, colour 1 transparent
        im = Image.new("P", (32, 32), 0)
        im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
        im.paste(1, (16, 0, 32, 32))
        im.save(tmp_path / "img.png", transparency=1)
    px = resolve_source(str(tmp_path / "img.png")).read(0, 1)[0].to(torch.int64)
    left = [200] * 3 if make == "LA" else [255, 0, 0]
    assert px[:, 1:, :16].tolist() == torch.tensor(left).view(3, 1, 1).expand(3, 31, 16).tolist()
    assert (px[:, 1:, 16:] == 128).all()
    if make == "LA":  # half transparent: halfway between grey and 200
        expect = round(200 * 128 / 255 + 128 * 127 / 255)
        assert (px[:, 0, :16] - expect).abs().max() <= 1
