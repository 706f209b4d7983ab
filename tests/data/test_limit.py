"""--limit N decodes the first N files of a folder, not the whole folder (issue 17): a broken
file after them is never read; the decode cache holds the N for later runs; the same N
images read from a whole-folder cache give the same pixels and fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deconvviz.cli import main
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.folders import cache_dir
from deconvviz.data.resolve import resolve_source
from deconvviz.errors import DeconvvizError


def _folder(root, n=12, broken=8):
    images, _ = synthetic_images(n, seed=5)
    root.mkdir(parents=True)
    files = []
    for i in range(n):
        path = root / f"{i:02d}.png"
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path)
        files.append(path)
    files[broken].write_bytes(b"not an image")
    return files


def _caches():
    return sorted(p.name for p in cache_dir().glob("*.npy"))  # this test's own cache


def _shape(name):
    return np.load(cache_dir() / name, mmap_mode="r").shape


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DECONVVIZ_CACHE", str(tmp_path / "cache"))


def test_limit_decodes_only_the_first_files(tmp_path):
    files = _folder(tmp_path / "imgs")
    assert _caches() == []
    first = resolve_source(str(tmp_path / "imgs"), limit=5)  # file 8 is broken: never read
    assert len(first) == 5 and first.paths == [str(f) for f in files[:5]]
    [prefix] = _caches()
    assert _shape(prefix) == (5, 3, 32, 32)  # cached for the next run
    want = np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1) for f in files[:5]])
    assert np.array_equal(first.read(0, 5).numpy(), want)

    # The whole folder stops at its broken file, naming --skip-unreadable.
    with pytest.raises(DeconvvizError) as err:
        resolve_source(str(tmp_path / "imgs"))
    assert str(err.value).startswith(f"cannot read image {files[8]}: ")
    assert str(err.value).endswith("; --skip-unreadable leaves such files out")
    whole = resolve_source(str(tmp_path / "imgs"), skip_unreadable=True)
    assert len(whole) == 11 and whole.skipped == [str(files[8])]
    assert len(_caches()) == 2

    # Now the first five come from the whole folder's cache: same pixels, same fingerprint.
    again = resolve_source(str(tmp_path / "imgs"), limit=5)
    assert len(_caches()) == 2  # nothing decoded again
    assert np.array_equal(again.read(0, 5).numpy(), want)
    assert again.fingerprint == first.fingerprint
    assert np.array_equal(again.labels.numpy(), first.labels.numpy())

    # A broken file among the first N: stopped at, or skipped, as without --limit.
    with pytest.raises(DeconvvizError, match="; --skip-unreadable leaves such files out$"):
        resolve_source(str(tmp_path / "imgs"), limit=10)
    some = resolve_source(str(tmp_path / "imgs"), limit=10, skip_unreadable=True)
    assert len(some) == 9 and some.skipped == [str(files[8])]
    assert np.array_equal(some.read(0, 9).numpy(), whole.read(0, 9).numpy())


def test_report_with_limit_never_reads_the_files_after_it(tiny_checkpoint, tmp_path):
    _folder(tmp_path / "imgs")
    out = tmp_path / "r"
    res = CliRunner().invoke(
        main,
        [
            "report",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(tmp_path / "imgs"),
            "--limit",
            "5",
            "--top",
            "2",
            "--layer",
            "1",
            "--no-png",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert [_shape(name) for name in _caches()] == [(5, 3, 32, 32)]
