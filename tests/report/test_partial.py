"""Long reports lose no work (issue 17): each finished layer is kept in report.h5.partial,
Ctrl-C says so, --resume finishes from the last finished layer; progress per phase;
--feature; one honest line for --resume without state, --top beyond the images and a
refused report (no folder left behind)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_close, folder_bytes

import deconvviz.runs.report_layers as report_layers
from deconvviz.cli import main
from deconvviz.runs.report_partial import partial_path
from deconvviz.runs.report_scan import scan_state_path
from deconvviz.store.report_read import read_report_h5


@pytest.fixture
def args(tiny_checkpoint, image_folder):
    """``args(out, *extra)``: a quiet two-layer report of the folder into ``out``."""

    def make(out, *extra):
        return [
            "report",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(image_folder),
            "--limit",
            "36",
            "--layer",
            "1",
            "--layer",
            "2",
            "--top",
            "3",
            "--batch-size",
            "20",
            "--quiet",
            "--no-png",
            "--out",
            str(out),
            *extra,
        ]

    return make


def _run(args):
    return CliRunner().invoke(main, args)


def _datasets(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def _same(x, y) -> bool:
    """The same array, bit for bit where the same code computed it (NaN equal to NaN)."""
    return x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")


def _failing_on(layer, exc):
    """project_seeds (the engine's public verb the report calls) raising ``exc`` when asked
    for ``layer``: Ctrl-C or a failure in the middle of that layer's projections."""
    real = report_layers.project_seeds

    def project(model, images, tops, **kw):
        if layer in tops:
            raise exc
        return real(model, images, tops, **kw)

    return project


def test_ctrl_c_in_layer_2_keeps_layer_1_and_resume_finishes_the_same_report(
    args, tmp_path, monkeypatch
):
    whole = tmp_path / "whole"
    assert _run(args(whole, "--feature", "0-3")).exit_code == 0
    out = tmp_path / "r"
    # An earlier complete report in the same folder (k = 2) must survive the interruption.
    assert _run(args(out, "--top", "2", "--feature", "0-1", "--png")).exit_code == 0
    earlier = folder_bytes(out)

    monkeypatch.setattr(report_layers, "project_seeds", _failing_on(2, KeyboardInterrupt()))
    res = _run(args(out, "--feature", "0-3"))
    partial = partial_path(out)
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: interrupted after 1 of 2 layers; the finished layers are kept in {partial} "
        "(an earlier report.h5 is left as it was): run the same command with --resume to "
        "finish the report"
    ]
    now = folder_bytes(out)
    assert now.pop(Path("report.h5.partial")) and now.pop(Path(".scan-state.pt"))
    for j in range(2):  # with every image's maxima of each layer
        assert now.pop(Path(f".scan-state.maxima{j}.f16"))
    assert now == earlier  # report.h5 and its PNGs untouched
    with h5py.File(partial, "r") as f:  # layer 1 whole and marked, no trace of 2
        assert bool(f["layer1"].attrs["complete"]) and "layer2" not in f
        kept = f["layer1/projection"][()]

    # The resumed run projects layer 2 only: asking for layer 1 again would fail.
    monkeypatch.undo()
    monkeypatch.setattr(
        report_layers, "project_seeds", _failing_on(1, AssertionError("layer 1 projected again"))
    )
    res = _run(args(out, "--resume", "--png", "--feature", "0-3"))
    assert res.exit_code == 0, res.output
    assert f"deconvviz: resuming the report after 1 of 2 finished layers in {partial}" in res.output
    assert not partial.exists() and not list(out.glob(".scan-state*"))  # maxima too
    a, b = _datasets(out / "report.h5"), _datasets(whole / "report.h5")
    assert a.keys() == b.keys() and len(a) > 10
    # The feature statistics too: layer 2's from the maxima kept beside the scan state.
    assert a["layer2/statistics/maxima"].shape == (4, 36) and "layer2/statistics/auroc" in a
    for name in a:  # the same code computed the same bytes
        assert _same(a[name], b[name]), name
    assert np.array_equal(a["layer1/projection"], kept)
    # The PNGs of both layers were drawn (from the finished file) and replaced the earlier.
    pngs = folder_bytes(out, ".png")
    assert len(pngs) == 2 + 4 + 4
    assert pngs[Path("layer1.png")] != earlier[Path("layer1.png")]
    assert pngs[Path("layer2/feature001.png")] != earlier[Path("layer2/feature001.png")]


def test_ctrl_c_before_any_layer_is_finished_keeps_the_scan(args, tmp_path, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(report_layers, "project_seeds", _failing_on(1, KeyboardInterrupt()))
    res = _run(args(out))
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: interrupted; the scan so far is saved in {scan_state_path(out)}: run the "
        "same command with --resume to continue"
    ]
    assert not (out / "report.h5").exists()


def test_a_damaged_unfinished_report_is_projected_again(args, tmp_path, monkeypatch):
    """A process killed while writing may leave report.h5.partial unreadable: --resume
    says so in a notice and projects every layer again, to the same report."""
    whole, out = tmp_path / "whole", tmp_path / "r"
    assert _run(args(whole)).exit_code == 0
    monkeypatch.setattr(report_layers, "project_seeds", _failing_on(2, KeyboardInterrupt()))
    assert _run(args(out)).exit_code == 1
    monkeypatch.undo()
    partial = partial_path(out)
    partial.write_bytes(partial.read_bytes()[:3000])  # cut short
    res = _run(args(out, "--resume"))
    assert res.exit_code == 0, res.output
    assert (
        f"deconvviz: the unfinished report {partial} is damaged (not a readable HDF5 "
        "file); projecting every layer again"
    ) in res.output
    a, b = _datasets(out / "report.h5"), _datasets(whole / "report.h5")
    assert a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def test_resume_refuses_an_unfinished_report_of_another_run(args, tmp_path, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(report_layers, "project_seeds", _failing_on(2, KeyboardInterrupt()))
    assert _run(args(out)).exit_code == 1
    monkeypatch.undo()
    before = folder_bytes(out)
    # The scan is the same (its state fits); the projections would use another rule.
    res = _run(args(out, "--resume", "--rule", "guided"))
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: --resume: the unfinished report {partial_path(out)} is from another run "
        "(its rule differ); remove it or run without --resume"
    ]
    assert folder_bytes(out) == before


def test_resume_without_a_saved_state_is_one_line_and_overwrites_nothing(args, tmp_path):
    out = tmp_path / "r"
    assert _run(args(out)).exit_code == 0
    before = folder_bytes(out)
    res = _run(args(out, "--resume"))
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: --resume: nothing to resume in {out} (no saved scan state .scan-state.pt); "
        "run without --resume"
    ]
    assert folder_bytes(out) == before
    fresh = tmp_path / "new" / "deeper"
    res = _run(args(fresh, "--resume"))
    assert res.exit_code == 1 and not (tmp_path / "new").exists()


def test_refused_reports_leave_no_folder_they_created(args, tmp_path):
    cases = [
        (
            ["--layer", "5"],
            1,
            "Error: layer 5 is out of range: this network has layers 1..2 (see 'deconvviz layers')",
        ),
        (
            ["--feature", "40"],
            1,
            "Error: feature 40 is out of range: layer 1 has 32 features (0..31)",
        ),
        (["--feature", "7-3"], 2, "expected a feature number (from 0) or a range A-B"),
        (["--feature", "x"], 2, "expected a feature number or a range like 0-15, got 'x'"),
    ]
    for extra, code, message in cases:
        out = tmp_path / "a" / "b"
        res = _run(args(out, *extra))
        assert res.exit_code == code, (extra, res.output)
        assert message in res.output and "Traceback" not in res.output, res.output
        if code == 1:
            assert res.output.strip().splitlines() == [message]
        assert not (tmp_path / "a").exists(), extra
    # An existing folder is left as it was (here: empty).
    (tmp_path / "mine").mkdir()
    assert _run(args(tmp_path / "mine", "--layer", "5")).exit_code == 1
    assert (tmp_path / "mine").is_dir()


def test_features_restrict_the_report_to_those_channels(args, tmp_path):
    whole, some = tmp_path / "whole", tmp_path / "some"
    assert _run(args(whole)).exit_code == 0
    res = _run(
        args(
            some,
            "--feature",
            "12-14",
            "--feature",
            "3",
            "--feature",
            "13",
            "--feature",
            "31",
            "--png",
        )
    )
    assert res.exit_code == 0, res.output
    ids = [3, 12, 13, 14, 31]
    a, b = read_report_h5(some / "report.h5"), read_report_h5(whole / "report.h5")
    for L in (1, 2):
        assert a.layers[L].feature_ids.tolist() == ids
        assert b.layers[L].feature_ids.tolist() == list(range(b.layers[L].features))
        for name in (
            "activation",
            "image_index",
            "position",
            "label",
            "patch",
            "patch_box",
            "patch_origin",
        ):
            assert np.array_equal(getattr(a.layers[L], name), getattr(b.layers[L], name)[ids])
        # The statistics of the kept channels, row for row (the same code on the same
        # per-image maxima: the same bytes).
        sa, sb = a.layers[L].stats, b.layers[L].stats
        assert sa.maxima.shape == (len(ids), 36)
        for name in (
            "maxima",
            "firing_rate",
            "mean",
            "quantiles",
            "histogram",
            "histogram_edges",
            "auroc",
            "p_value",
            "p_adjusted",
            "topk_share",
            "label",
            "label_auroc",
            "label_p",
        ):
            assert _same(getattr(sa, name), getattr(sb, name)[ids]), name
        assert _same(sa.class_count, sb.class_count)
        # Projected in other groups of seeds than the whole layer: equal to rounding.
        assert_close(
            torch.from_numpy(a.layers[L].projection), torch.from_numpy(b.layers[L].projection[ids])
        )
    names = sorted(p.name for p in (some / "layer2").iterdir())
    assert names == [f"feature{f:03d}.png" for f in ids]
    # Kept images: only those of the chosen features.
    want = np.unique(np.concatenate([b.layers[L].image_index[ids].ravel() for L in (1, 2)]))
    assert np.array_equal(a.images.index, want)
    # Its web report names the features by channel (the pages: tests/render/test_web_site.py).
    res = _run(["render", str(some / "report.h5"), "--html", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    pages = sorted(p.name for p in (tmp_path / "s" / "site" / "layer2").glob("*.html"))
    assert pages == [f"feature{f:03d}.html" for f in ids]


def test_top_beyond_the_number_of_images_is_capped_with_a_notice(args, tmp_path):
    out = tmp_path / "r"
    argv = args(out)
    argv[argv.index("--limit") + 1] = "5"
    argv[argv.index("--top") + 1] = "100000"
    res = _run(argv)
    assert res.exit_code == 0, res.output
    assert (
        "deconvviz: top 100000 is more than the 5 images scanned; each feature keeps all 5"
        in res.output
    )
    rep = read_report_h5(out / "report.h5")
    assert rep.attrs["top_k"] == 5 and rep.layers[2].activation.shape == (64, 5)


_BAR = r"\[[#-]{20}\] +\d+/\d+ +\d+ UNIT/s +\d+s left"


def test_every_phase_shows_progress_as_lines_in_a_log(args, tmp_path):
    def lines_of(*extra):
        res = _run([a for a in args(tmp_path / "r", *extra) if a != "--quiet"])
        assert res.exit_code == 0, res.output
        assert "\r" not in res.output  # not a terminal: plain lines
        return res.output.splitlines()

    done = r" \(\d+\.\ds\)"
    lines = lines_of("--feature", "0-2", "--png")
    lines += lines_of("--limit", "10", "--top", "1", "--html")
    for pattern in (
        rf"scan {_BAR.replace('UNIT', 'img')}{done}",
        rf"project layer1 \(1/2\) {_BAR.replace('UNIT', 'feature')}{done}",
        rf"project layer2 \(2/2\) {_BAR.replace('UNIT', 'feature')}{done}",
        rf"PNGs {_BAR.replace('UNIT', 'png')}{done}",
        rf"web report {_BAR.replace('UNIT', 'layer')}{done}",
    ):
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines)
    assert any(
        line.startswith("project layer2 (2/2) [####################] 3/3 ") for line in lines
    )
    assert any(line.startswith("PNGs [####################] 8/8 ") for line in lines)
    assert any(line.startswith("web report [####################] 2/2 ") for line in lines)


def test_the_readme_call_with_a_data_source_string(image_folder, tmp_path):
    """README: ``build_report(model, "builtin", [2], 4)``; the string is resolved as
    ``--data`` is (the test split, preprocessed for the model)."""
    import deconvviz
    from deconvviz.data.resolve import resolve_source
    from deconvviz.runs.report_run import build_report, write_report

    model = deconvviz.load_model()
    report = build_report(model, "builtin", [2], 4)
    assert report.attrs["data_source"] == "builtin:test"
    assert report.attrs["num_images"] == 2000 and report.layers[2].k == 4
    assert report.attrs["data_fingerprint"] == resolve_source("builtin", split="test").fingerprint
    # write_report too (a folder, with a limit); a wrong kind of source is one line.
    written = write_report(
        model, str(image_folder), tmp_path / "w", [1], 2, limit=30, png=False, progress=False
    )
    assert written == [tmp_path / "w" / "report.h5"]
    back = read_report_h5(written[0])
    assert back.attrs["num_images"] == 30 and back.attrs["data_source"] == str(image_folder)
    with pytest.raises(
        deconvviz.errors.DeconvvizError,
        match="source must be an ImageSource or a data-source string",
    ):
        build_report(model, 7, [2], 4)
