"""Parallel decoding (--workers): the same pixels, in the same order, as one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deconvviz.cli import main
from deconvviz.data.decode import check_workers
from deconvviz.data.resolve import resolve_source
from deconvviz.errors import DeconvvizError


def _folder(root, n=75):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        # Odd sizes and modes so resizing, cropping and conversion all run in the workers.
        h, w = 20 + (i % 7) * 9, 24 + (i % 5) * 11
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(arr).convert("L" if i % 10 == 0 else "RGB")
        im.save(d / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def test_workers_decode_the_same_pixels_in_the_same_order(tmp_path, monkeypatch):
    import deconvviz.data.folders as sources

    root = _folder(tmp_path / "imgs")
    asked = []
    real = sources.decode_files

    def spy(paths, decode, workers=0):
        asked.append(workers)
        return real(paths, decode, workers)

    monkeypatch.setattr(sources, "decode_files", spy)
    one = resolve_source(str(root), image_size=(32, 32))
    monkeypatch.setenv("DECONVVIZ_CACHE", str(tmp_path / "other-cache"))  # decode again
    two = resolve_source(str(root), image_size=(32, 32), workers=2)
    assert asked == [0, 2]
    assert one.paths == two.paths and torch.equal(one.labels, two.labels)
    assert torch.equal(one.read(0, len(one)), two.read(0, len(two)))
    assert one.fingerprint == two.fingerprint
    single = resolve_source(one.paths[5], image_size=(32, 32), workers=2)
    assert torch.equal(single.read(0, 1), one.read(5, 6))


def test_an_unreadable_file_in_a_worker_is_one_line(tmp_path):
    root = _folder(tmp_path / "imgs", n=70)
    bad = root / "c2" / "zz_broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DeconvvizError) as err:
        resolve_source(str(root), image_size=(32, 32), workers=2)
    assert str(err.value).startswith(f"cannot read image {bad}: ")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_workers_option_checks(tmp_path, capsys):
    assert check_workers(0) == 0
    with pytest.raises(DeconvvizError, match="--workers must be 0 or more, got -1"):
        check_workers(-1)
    check_workers(10_000)
    assert "--workers 10000 is more than this machine's" in capsys.readouterr().err
    res = CliRunner().invoke(main, ["evaluate", "--workers", "-2"])
    assert res.exit_code == 2 and "--workers must be 0 or more, got -2" in res.output


def test_transparent_pixels_become_mid_grey_with_a_notice(tmp_path, capsys):
    arr = np.zeros((32, 32, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red ...
    arr[:, :16, 3] = 255  # ... opaque on the left, transparent on the right
    Image.fromarray(arr, "RGBA").save(tmp_path / "half.png")
    src = resolve_source(str(tmp_path / "half.png"))
    px = src.read(0, 1)[0]
    assert (
        px[:, :, :16].tolist() == torch.tensor([255, 0, 0]).view(3, 1, 1).expand(3, 32, 16).tolist()
    )
    assert (px[:, :, 16:] == 128).all()
    assert "composited 1 image(s) with transparent pixels on mid-grey" in capsys.readouterr().err
