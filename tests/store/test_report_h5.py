"""The report file (store/report_h5.py, report_write.py, report_read.py): written and read
back array for array, redrawn from the file alone, a version-1 file of deconvviz 0.1.0 read
and drawn as then, damaged, foreign and newer files refused in one line, and a layer read
one feature at a time."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import generated_source

from deconvviz.cli import main
from deconvviz.data.builtin import BUILTIN_CLASSES
from deconvviz.errors import DeconvvizError
from deconvviz.models.checkpoint import load_model
from deconvviz.render.report_png import PANEL_TITLE_HEIGHT, feature_png
from deconvviz.runs.report_render import render_report, save_report
from deconvviz.runs.report_run import build_report, write_report
from deconvviz.store.report_h5 import REPORT_FORMAT, REPORT_VERSION
from deconvviz.store.report_read import read_report_h5

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_hdf5_round_trip_and_render(model, tmp_path):
    src = generated_source(80)
    rep = build_report(
        model, src, [1, 2], 4, batch_size=30, progress=False, command_line="deconvviz report --test"
    )
    written = save_report(rep, tmp_path / "r", h5=True, png=False)
    h5 = tmp_path / "r" / "report.h5"
    assert h5 in written
    with h5py.File(h5, "r") as f:
        assert f.attrs["format"] == REPORT_FORMAT and f.attrs["format_version"] == REPORT_VERSION
        assert f.attrs["num_images"] == 80 and f.attrs["command_line"] == "deconvviz report --test"
        assert list(f.keys()) == ["images", "layer1", "layer2"]
        assert f["layer2/activation"].dtype == np.float32
        assert f["layer2/image_index"].dtype == np.int64
        assert f["layer2/projection"].shape == (64, 4, 3, 16, 16)  # cut to the 16x16 field
        assert f["images/pixels"].shape[1:] == (3, 32, 32)
        assert f["layer2/patch"].shape == (64, 4, 3, 16, 16)
    back = read_report_h5(h5)
    for L, lr in rep.layers.items():
        for name in (
            "activation",
            "image_index",
            "label",
            "position",
            "projection",
            "patch",
            "patch_box",
            "patch_origin",
        ):
            assert np.array_equal(getattr(back.layers[L], name), getattr(lr, name)), name
        assert back.layers[L].rf_size == lr.rf_size
    # Redraw from the file alone: same PNG pixels as drawn from the report in memory.
    out = tmp_path / "rendered"
    render_report(h5, out)
    from PIL import Image

    for L, f in ((1, 0), (2, 63)):
        got = np.asarray(Image.open(out / f"layer{L}" / f"feature{f:03d}.png"))
        assert np.array_equal(got, feature_png(rep.layers[L], f, list(BUILTIN_CLASSES)))
    assert (out / "layer1.png").is_file() and (out / "layer2.png").is_file()
    assert len(list((out / "layer2").glob("*.png"))) == 64
    # The patch row of a feature PNG shows the stored patch pixels (4x nearest upscaling).
    panel = np.asarray(Image.open(out / "layer2" / "feature005.png"))
    patch = back.layers[2].patch[5, 0].transpose(1, 2, 0)
    # second row, first tile (below the title; tiles are 64x64, 2-pixel gaps)
    y, x = PANEL_TITLE_HEIGHT + 2 + 64 + 2, 2
    box, origin = back.layers[2].patch_box[5, 0], back.layers[2].patch_origin[5, 0]
    oy, ox = box[0] - origin[0], box[1] - origin[1]
    inner = panel[
        y + 4 * oy : y + 4 * (oy + box[2] - box[0]) : 4,
        x + 4 * ox : x + 4 * (ox + box[3] - box[1]) : 4,
    ]
    assert np.array_equal(inner, patch[oy : oy + box[2] - box[0], ox : ox + box[3] - box[1]])


def test_render_rejects_damaged_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(200))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "keras"
        f.create_dataset("x", data=[1, 2, 3])
    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as f:
        f.attrs["format"] = REPORT_FORMAT
        for a in (
            "format_version",
            "package_version",
            "checkpoint_sha256",
            "data_source",
            "split",
            "num_images",
            "command_line",
            "top_k",
            "layers",
        ):
            f.attrs[a] = 99
    cases = [
        (junk, "is not a readable HDF5 file"),
        (foreign, "is not a deconvviz report (format attribute 'keras'"),
        (newer, "has format version 99; this deconvviz reads versions 1..3"),
        (tmp_path / "missing.h5", "does not exist"),
    ]
    for path, message in cases:
        res = _run(["render", str(path), "--out", str(tmp_path / "o")])
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_damaged_layer_arrays_are_reported(model, tmp_path):
    rep = build_report(model, generated_source(10), [1], 2, progress=False)
    save_report(rep, tmp_path, png=False)
    with h5py.File(tmp_path / "report.h5", "a") as f:
        del f["layer1/patch_box"]
        f["layer1"].create_dataset("patch_box", data=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(
        DeconvvizError,
        match=r"layer1/patch_box has shape \(3, 3\), "
        r"expected \(32, 2, 4\)",
    ):
        read_report_h5(tmp_path / "report.h5")


def test_a_version_1_report_reads_back_and_draws_as_before(tmp_path):
    # fixtures/v1 was written by deconvviz 0.1.0 before the report format moved to version 2:
    # whole-image projections, no stored images. It still reads, its projections cut to
    # the patch windows, and its layer grid redraws byte for byte as 0.1.0 drew it.
    path = FIXTURES / "v1" / "report.h5"
    rep = read_report_h5(path)
    assert rep.attrs["format_version"] == 1 and rep.images is None
    lr = rep.layers[1]
    assert lr.projection.shape == (2, 2, 3, 4, 4) and lr.patch.shape == (2, 2, 3, 4, 4)
    with h5py.File(path, "r") as f:
        full = f["layer1/projection"][()]
    for fe in range(2):
        for j in range(2):
            y0, x0, y1, x1 = lr.patch_box[fe, j]
            oy, ox = y0 - lr.patch_origin[fe, j, 0], x0 - lr.patch_origin[fe, j, 1]
            assert np.array_equal(
                lr.projection[fe, j, :, oy : oy + y1 - y0, ox : ox + x1 - x0],
                full[fe, j, :, y0:y1, x0:x1],
            )
            assert np.abs(lr.projection[fe, j]).sum() == pytest.approx(np.abs(full[fe, j]).sum())
    render_report(path, tmp_path / "drawn")
    assert (tmp_path / "drawn" / "layer1.png").read_bytes() == (
        FIXTURES / "v1" / "layer1.png"
    ).read_bytes()


def test_open_report_reads_one_feature_at_a_time_and_names_damage_in_one_line(model, tmp_path):
    from deconvviz.store.report_read import open_report

    src = generated_source(30)
    write_report(model, src, tmp_path / "r", [1, 2], 3, batch_size=16, progress=False, png=False)
    path = tmp_path / "r" / "report.h5"
    whole = read_report_h5(path)
    with open_report(path) as rep:
        lr = rep.layers[2]
        assert (
            not isinstance(lr.projection, np.ndarray)
            and lr.projection.shape == whole.layers[2].projection.shape
        )
        for f in (0, 17, 63):
            assert np.array_equal(lr.projection[f], whole.layers[2].projection[f])
            assert np.array_equal(lr.patch[f], whole.layers[2].patch[f])
        assert np.array_equal(np.asarray(lr.patch), whole.layers[2].patch)
    # An error of the caller's own work is not blamed on the file.
    with pytest.raises(OSError, match="No space left"):
        with open_report(path):
            raise OSError(28, "No space left on device")
    # Scribble over one stored chunk of layer 2's projections.
    with h5py.File(path) as f:
        info = f["layer2/projection"].id.get_chunk_info(5)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset : info.byte_offset + info.size] = b"\x00" * info.size
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(raw))
    with open_report(bad) as rep:
        rep.layers[2].projection[4]  # other chunks read fine
        with pytest.raises(DeconvvizError, match=r"^report .*bad.h5 is damaged: "):
            rep.layers[2].projection[5]
    r = CliRunner().invoke(main, ["render", str(bad), "--html", "--out", str(tmp_path / "s")])
    assert r.exit_code == 1 and "is damaged" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "site").exists()
