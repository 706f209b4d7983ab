"""``deconvviz render``: a projection file redrawn from the file alone (the report's redraws
are checked with the report tests, through the same shared check), newer files refused, and
the files it does not draw named in one line."""

from __future__ import annotations

import h5py
from click.testing import CliRunner
from conftest import assert_render_redraws

from deconvviz.cli import main
from deconvviz.store.h5 import stamp


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_render_redraws_a_projection_file(tmp_path):
    r = run("project", "--layer", "2", "--feature", "9", "--top", "3", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    stem = "layer2_feature9_max_deconvnet_switches"
    with h5py.File(tmp_path / "p" / f"{stem}.h5") as f:
        boxes = f["patch_box"][()]
        assert boxes.shape == (3, 4) and (boxes[:, 2:] - boxes[:, :2] <= 16).all()
    r = assert_render_redraws(tmp_path / "p" / f"{stem}.h5", tmp_path / "p", tmp_path / "again")
    assert r.output.strip() == f"wrote {tmp_path / 'again' / (stem + '.png')}"
    # A newer projection file is refused in one line.
    with h5py.File(tmp_path / "p" / f"{stem}.h5", "a") as f:
        f.attrs["format_version"] = 9
    r = run("render", tmp_path / "p" / f"{stem}.h5", "--out", tmp_path / "x")
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"Error: projection file {tmp_path / 'p' / (stem + '.h5')} has format version 9; this "
        "deconvviz reads versions 1..1"
    ]


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
