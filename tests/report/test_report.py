"""Max-activation reports: top-k scan, merge, patches, HDF5, render, CLI, atomic writes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import (
    alexnet_like,
    assert_render_redraws,
    folder_bytes,
    generated_source,
    reference_projection,
)
from torch import nn

from deconvviz.cli import main
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.source import ImageSource, normalize
from deconvviz.engine.deconv.seeds import project_seeds
from deconvviz.engine.net.geometry.patches import extract_patches
from deconvviz.engine.net.layers import conv_stack, get_layer, list_layers
from deconvviz.engine.scan import scan_topk
from deconvviz.engine.topk import TopK, empty_topk, finalize_topk, merge_topk
from deconvviz.errors import DeconvvizError
from deconvviz.models.checkpoint import load_model
from deconvviz.runs.report_render import render_report, save_report
from deconvviz.runs.report_run import build_report, write_report
from deconvviz.store.report_read import read_report_h5


def _brute_force(model, source, layer, k):
    """Sort every (image, feature) maximum with Python's sort: independent of the scan."""
    info = get_layer(model, layer)
    mean, std = model.meta["normalization"]["mean"], model.meta["normalization"]["std"]
    with torch.no_grad():
        x = normalize(source.read(0, len(source)), mean, std).double()
        out = conv_stack(model).double()[: info.end](x)
    conv_stack(model).float()
    n, c, h, w = out.shape
    expect = []
    for f in range(c):
        entries = []
        for i in range(n):
            plane = out[i, f].reshape(-1).tolist()
            best = max(plane)
            p = plane.index(best)  # first maximum in row-major order
            entries.append((-best, i, (p // w, p % w)))
        entries.sort(key=lambda e: (e[0], e[1]))
        expect.append(entries[:k])
    return expect


@pytest.fixture
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint)


def _check_against(top: TopK, expect, rtol=1e-5):
    for f, entries in enumerate(expect):
        assert top.image_index[f].tolist() == [e[1] for e in entries], f"feature {f}"
        assert [tuple(p) for p in top.position[f].tolist()] == [e[2] for e in entries]
        np.testing.assert_allclose(
            top.activation[f].numpy(), [-e[0] for e in entries], rtol=rtol, atol=1e-5
        )


def test_scan_topk_matches_brute_force(model):
    src = generated_source(150)
    tops = scan_topk(model, src, [1, 2], k=5, batch_size=32)  # several batches, last partial
    for L in (1, 2):
        _check_against(tops[L], _brute_force(model, src, L, 5))
        assert tops[L].activation.dtype == torch.float32
        assert (tops[L].activation[:, :-1] >= tops[L].activation[:, 1:]).all()


def test_ties_go_to_the_smaller_image_index(model):
    # A dead feature (activation 0 everywhere) ties on every image and every position.
    stack = conv_stack(model)
    with torch.no_grad():
        stack[3].bias[7] = -1e6
    src = generated_source(40, dup=True)  # image i and i + 40 are identical
    tops = scan_topk(model, src, [2], k=6, batch_size=16)
    t = tops[2]
    assert t.image_index[7].tolist() == [0, 1, 2, 3, 4, 5]
    assert t.position[7].tolist() == [[0, 0]] * 6
    assert t.activation[7].tolist() == [0.0] * 6
    # Every other feature: each kept image's duplicate ties with it; the copy ranks right after.
    for f in range(t.image_index.shape[0]):
        if f == 7:
            continue
        idx = t.image_index[f].tolist()
        assert idx[0] < 40 and idx[1] == idx[0] + 40, (f, idx)
        assert t.activation[f, 0] == t.activation[f, 1]
    _check_against(t, _brute_force(model, src, 2, 6))


def test_k_larger_than_the_data_set(model):
    src = generated_source(5)
    tops = scan_topk(model, src, [1], k=9, batch_size=2)
    t = tops[1]
    assert t.image_index.shape == (32, 9)
    assert (t.image_index[:, 5:] == -1).all() and torch.isinf(t.activation[:, 5:]).all()
    fin = finalize_topk(t, len(src))
    assert fin.image_index.shape == (32, 5)
    for f in range(32):
        assert sorted(fin.image_index[f].tolist()) == [0, 1, 2, 3, 4]
    _check_against(fin, _brute_force(model, src, 1, 9))
    rep = build_report(model, src, [1], 9, progress=False)
    assert rep.layers[1].k == 5 and rep.layers[1].projection.shape == (32, 5, 3, 6, 6)


def test_merge_is_associative_and_sharded_scans_merge_exactly(model):
    src = generated_source(120, dup=True)  # with ties across shards
    full = scan_topk(model, src, [1, 2], k=4, batch_size=20)
    shards = [scan_topk(model, src, [1, 2], k=4, batch_size=20, shard=(r, 3)) for r in range(3)]
    for L in (1, 2):
        a, b, c = (s[L] for s in shards)
        left, right = merge_topk(merge_topk(a, b), c), merge_topk(a, merge_topk(b, c))
        swapped = merge_topk(c, merge_topk(b, a))
        for got in (left, right, swapped):
            assert torch.equal(got.image_index, full[L].image_index)
            assert torch.equal(got.position, full[L].position)
            assert torch.equal(got.activation, full[L].activation)
        ident = merge_topk(empty_topk(full[L].activation.shape[0], 4), full[L])
        assert torch.equal(ident.image_index, full[L].image_index)


def test_scan_rejects_bad_arguments_and_restores_the_model(model):
    src = generated_source(4)
    model.train()
    with pytest.raises(
        DeconvvizError, match=r"layer 3 is out of range: this network has layers 1\.\.2"
    ):
        scan_topk(model, src, [3], k=2)
    with pytest.raises(DeconvvizError, match="top k must be at least 1, got 0"):
        scan_topk(model, src, [1], k=0)
    scan_topk(model, src, [1], k=2)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_hand_computed_boxes_and_patches():
    # CifarCNN: layer 1 = conv5 p2 + pool2 -> field 6, jump 2, start -2;
    # layer 2 adds conv5 p2 + pool2 -> field 16, jump 4, start -6.
    model = torch.nn.Sequential(
        nn.Conv2d(3, 2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2, 2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    l1, l2 = list_layers(model, (32, 32))
    images = torch.arange(4 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8)
    images = images.view(4, 3, 32, 32)
    cases = [
        (l1, (0, 0), (0, 0, 4, 4), (-2, -2)),
        (l1, (5, 7), (8, 12, 14, 18), (8, 12)),
        (l2, (0, 0), (0, 0, 10, 10), (-6, -6)),
        (l2, (7, 7), (22, 22, 32, 32), (22, 22)),
    ]
    for n, (info, pos, box, origin) in enumerate(cases):
        patch, got_box, got_origin = extract_patches(info, images[n : n + 1], torch.tensor([pos]))
        assert got_box[0].tolist() == list(box)
        assert got_origin[0].tolist() == list(origin)
        assert patch.shape == (1, 3) + info.rf_size
        y0, x0, y1, x1 = box
        oy, ox = y0 - origin[0], x0 - origin[1]
        expect = torch.zeros((3,) + info.rf_size, dtype=torch.uint8)
        expect[:, oy : oy + y1 - y0, ox : ox + x1 - x0] = images[n, :, y0:y1, x0:x1]
        assert torch.equal(patch[0], expect)


def test_boxes_on_a_strided_dilated_stack_contain_the_projection():
    # alexnet_like layer 1: conv k5 s2 p2 -> field 5, jump 2, start -2; pool k3 s2 ->
    # field 5 + 2*2 = 9, jump 4, start -2. Layer 2 adds conv k3 dilation 2 p2 -> field
    # 9 + 4*4 = 25, jump 4, start -2 - 2*4 = -10.
    model = alexnet_like()
    l1, l2, _ = list_layers(model, (32, 32))
    assert (l1.rf_size, l1.rf_jump, l1.rf_start) == ((9, 9), (4, 4), (-2, -2))
    assert (l2.rf_size, l2.rf_jump, l2.rf_start) == ((25, 25), (4, 4), (-10, -10))
    _, box, _ = extract_patches(
        l2, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.tensor([[3, 1]])
    )
    assert box[0].tolist() == [2, 0, 27, 19]
    # The deconvnet projection of that unit is zero outside the box.
    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    g = reference_projection(conv_stack(model), x, l2.end, feature=0, position=(3, 1))
    outside = g.clone()
    outside[..., 2:27, 0:19] = 0
    assert outside.abs().max() == 0 and g.abs().max() > 0


def test_projections_equal_autograd_reference_and_the_scan(model):
    src = generated_source(60)
    rep = build_report(model, src, [1, 2], 3, batch_size=25, progress=False)
    mean, std = model.meta["normalization"]["mean"], model.meta["normalization"]["std"]
    stack = conv_stack(model)
    tops = {
        L: TopK(
            torch.from_numpy(lr.activation),
            torch.from_numpy(lr.image_index),
            torch.from_numpy(lr.position),
        )
        for L, lr in rep.layers.items()
    }
    images = {i: src.read(i, i + 1)[0] for i in range(len(src))}
    _, acts = project_seeds(model, images, tops)
    for L, lr in rep.layers.items():
        # The seeded activation (recorded forward) is the one the scan ranked.
        np.testing.assert_allclose(acts[L].numpy(), lr.activation, rtol=1e-5, atol=1e-6)
        info = get_layer(model, L)
        for f in (0, lr.features - 1):
            for j in range(lr.k):
                i = int(lr.image_index[f, j])
                x = normalize(src.read(i, i + 1), mean, std).double()
                ref = reference_projection(
                    stack.double(),
                    x,
                    info.end,
                    f,
                    position=tuple(int(v) for v in lr.position[f, j]),
                )
                stack.float()
                # Stored cut to the receptive-field window; nothing of it lies outside.
                y0, x0, y1, x1 = lr.patch_box[f, j]
                oy, ox = y0 - lr.patch_origin[f, j, 0], x0 - lr.patch_origin[f, j, 1]
                window = np.zeros((3,) + lr.rf_size)
                window[:, oy : oy + y1 - y0, ox : ox + x1 - x0] = ref[0, :, y0:y1, x0:x1].numpy()
                assert float(ref.abs().sum()) == pytest.approx(float(np.abs(window).sum()))
                np.testing.assert_allclose(
                    lr.projection[f, j],
                    window,
                    rtol=1e-4,
                    atol=1e-4 * max(1e-6, float(ref.abs().max())),
                )


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_report_and_render(tiny_checkpoint, image_folder, tmp_path):
    out = tmp_path / "rep"
    res = _run(
        [
            "report",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(image_folder),
            "--limit",
            "30",
            "--top",
            "3",
            "--layer",
            "2",
            "--batch-size",
            "20",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'report.h5'}" in res.output
    assert f"wrote 64 feature PNGs in {out / 'layer2'}" in res.output
    rep = read_report_h5(out / "report.h5")
    assert list(rep.layers) == [2] and rep.attrs["num_images"] == 30
    assert rep.attrs["data_source"] == str(image_folder)
    # Indices follow torchvision's ImageFolder order: class "a" (odd files) first.
    order = sorted(image_folder.glob("*/*.png"), key=lambda p: (p.parent.name, p.name))
    src_images = [np.asarray(__import__("PIL.Image").Image.open(p)) for p in order]
    lr = rep.layers[2]
    y0, x0, y1, x1 = lr.patch_box[3, 0]
    oy, ox = y0 - lr.patch_origin[3, 0, 0], x0 - lr.patch_origin[3, 0, 1]
    assert np.array_equal(
        lr.patch[3, 0, :, oy : oy + y1 - y0, ox : ox + x1 - x0].transpose(1, 2, 0),
        src_images[lr.image_index[3, 0]][y0:y1, x0:x1],
    )
    assert len(rep.attrs["checkpoint_sha256"]) == 64
    assert_render_redraws(out / "report.h5", out, tmp_path / "png")
    # Checked before the data is read: the default source is never generated here.
    res = _run(["report", "--model", str(tiny_checkpoint), "--layer", "5", "--out", str(out)])
    assert res.exit_code != 0
    assert "Error: layer 5 is out of range: this network has layers 1..2" in res.output


def test_interrupted_runs_leave_the_earlier_report_untouched(
    tiny_checkpoint, image_folder, tmp_path, monkeypatch
):
    out = tmp_path / "rep"
    base = [
        "report",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(image_folder),
        "--top",
        "2",
        "--layer",
        "1",
        "--batch-size",
        "10",
        "--out",
        str(out),
        "--quiet",
    ]
    assert _run(base).exit_code == 0
    before = folder_bytes(out)
    assert Path("report.h5") in before and len(before) == 1 + 1 + 32

    # Ctrl-C in the middle of the scan.
    import deconvviz.runs.report_render as report_render

    calls = {"n": 0}
    real_read = ImageSource.read

    def interrupted_read(self, start, stop, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_read(self, start, stop, **kw)

    monkeypatch.setattr(ImageSource, "read", interrupted_read)
    res = _run(base + ["--top", "3"])
    assert res.exit_code == 130
    monkeypatch.setattr(ImageSource, "read", real_read)
    assert folder_bytes(out) == before

    # Disk full while the PNGs are written (the HDF5 temp file is complete by then).
    written = {"n": 0}
    real_png = report_render.write_png

    def full_disk(array, path):
        written["n"] += 1
        if written["n"] == 5:
            raise OSError(28, "No space left on device", str(path))
        real_png(array, path)

    monkeypatch.setattr(report_render, "write_png", full_disk)
    res = _run(base + ["--top", "3"])
    assert res.exit_code == 1 and "No space left on device" in res.output
    assert "Traceback" not in res.output
    # No temp file left, nothing replaced; the finished scan and layer are kept for --resume.
    after = folder_bytes(out)
    assert after.pop(Path(".scan-state.pt"), None) is not None
    assert after.pop(Path(".scan-state.maxima0.f16"), None) is not None  # its image maxima
    assert after.pop(Path("report.h5.partial"), None) is not None
    assert after == before
    monkeypatch.setattr(report_render, "write_png", real_png)
    res = _run(base + ["--top", "3", "--resume"])
    assert res.exit_code == 0, res.output
    assert not (out / ".scan-state.pt").exists()
    assert not (out / ".scan-state.maxima0.f16").exists()


def test_second_report_does_not_decode_again(tiny_checkpoint, tmp_path, monkeypatch):
    from PIL import Image

    import deconvviz.data.folders as data_mod

    root = tmp_path / "jpegs" / "cls"
    root.mkdir(parents=True)
    images, _ = synthetic_images(6, seed=4)
    for i in range(6):
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(root / f"{i}.jpg")
    decoded = {"n": 0}
    real = data_mod._decode

    def counting(*a, **kw):
        decoded["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(data_mod, "_decode", counting)
    args = [
        "report",
        "--model",
        str(tiny_checkpoint),
        "--data",
        str(tmp_path / "jpegs"),
        "--top",
        "2",
        "--layer",
        "1",
        "--no-png",
        "--quiet",
    ]
    assert _run(args + ["--out", str(tmp_path / "a")]).exit_code == 0
    assert decoded["n"] == 6
    assert _run(args + ["--out", str(tmp_path / "b")]).exit_code == 0
    assert decoded["n"] == 6  # read back from the decoded-image cache
    a, b = (
        read_report_h5(tmp_path / "a" / "report.h5"),
        read_report_h5(tmp_path / "b" / "report.h5"),
    )
    assert np.array_equal(a.layers[1].projection, b.layers[1].projection)


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
def test_batched_seed_projection_equals_autograd_on_a_strided_dilated_stack(rule):
    # Overlapping 3x3/2 pools, stride 2, dilation 2, ceil mode, a block without a pool,
    # and positions at every border: the closed-form seed block must match autograd.
    model = alexnet_like(seed=3)
    images, _ = synthetic_images(5, seed=5)
    gen = torch.Generator().manual_seed(0)
    tops = {}
    for info in list_layers(model, (32, 32)):
        F_, k = info.features, 2
        oh, ow = info.output_size
        pos = torch.stack(
            [
                torch.randint(0, oh, (F_, k), generator=gen),
                torch.randint(0, ow, (F_, k), generator=gen),
            ],
            dim=-1,
        )
        pos[0, 0] = torch.tensor([0, 0])
        pos[1, 0] = torch.tensor([oh - 1, ow - 1])
        idx = torch.randint(0, 5, (F_, k), generator=gen)
        tops[info.index] = TopK(torch.zeros(F_, k), idx, pos)
    pix = {i: images[i] for i in range(5)}
    proj, acts = project_seeds(
        model, pix, tops, rule=rule, mean=[0.0] * 3, std=[1.0] * 3, images_per_pass=2
    )
    x_all = images.double() / 255.0
    for info in list_layers(model, (32, 32)):
        L, t = info.index, tops[info.index]
        with torch.no_grad():
            out = model[: info.end](x_all)
        for f in range(info.features):
            for j in range(2):
                i, (py, px) = int(t.image_index[f, j]), t.position[f, j].tolist()
                assert acts[L][f, j] == pytest.approx(float(out[i, f, py, px]), abs=1e-6)
                ref = reference_projection(
                    model, x_all[i : i + 1], info.end, f, rule=rule, position=(py, px)
                )
                np.testing.assert_allclose(
                    proj[L][f, j].numpy(), ref[0].numpy(), rtol=1e-5, atol=1e-6
                )


def test_streamed_report_equals_the_in_memory_one_and_float16_halves_projections(model, tmp_path):
    src = generated_source(40)
    rep = build_report(
        model, src, [1, 2], 3, batch_size=16, progress=False, command_line="deconvviz report --test"
    )
    written = write_report(
        model,
        src,
        tmp_path / "s",
        [1, 2],
        3,
        batch_size=16,
        progress=False,
        command_line="deconvviz report --test",
    )
    assert sorted(p.name for p in written if p.suffix == ".h5") == ["report.h5"]
    back = read_report_h5(tmp_path / "s" / "report.h5")
    for L, lr in rep.layers.items():
        for name in ("activation", "image_index", "label", "position", "projection", "patch"):
            assert np.array_equal(getattr(back.layers[L], name), getattr(lr, name)), name
    assert np.array_equal(back.images.index, rep.images.index)
    assert np.array_equal(back.images.pixels, src.read_indices(rep.images.index.tolist()).numpy())
    # Same bytes as writing the in-memory report (no timestamps, same order).
    save_report(rep, tmp_path / "m", png=False)
    assert (tmp_path / "m" / "report.h5").read_bytes() == (
        tmp_path / "s" / "report.h5"
    ).read_bytes()
    write_report(
        model,
        src,
        tmp_path / "h",
        [1, 2],
        3,
        batch_size=16,
        progress=False,
        png=False,
        projection_dtype="float16",
    )
    half = read_report_h5(tmp_path / "h" / "report.h5")
    assert half.attrs["projection_dtype"] == "float16"
    assert half.layers[2].projection.dtype == np.float16
    np.testing.assert_allclose(
        half.layers[2].projection.astype(np.float32),
        rep.layers[2].projection,
        rtol=2e-3,
        atol=2e-3 * float(np.abs(rep.layers[2].projection).max()),
    )
    with h5py.File(tmp_path / "h" / "report.h5") as f, h5py.File(tmp_path / "s" / "report.h5") as g:
        assert (
            f["layer2/projection"].id.get_storage_size()
            < 0.6 * g["layer2/projection"].id.get_storage_size()
        )
        assert g["layer2/projection"].chunks == (1, 3, 3, 16, 16)
        assert g["layer2/projection"].compression == "gzip"


def test_a_layer_is_projected_and_written_in_chunks_of_features(model, tmp_path, monkeypatch):
    """With a chunk budget of a few features, each call projects at most that many
    features; the file holds the same numbers and bytes as a whole-layer write, and the
    PNGs drawn from the file being written equal those drawn from memory."""
    import deconvviz.runs.report_layers as report_layers
    import deconvviz.store.report_h5 as store_report
    from deconvviz.store.report_h5 import features_per_chunk

    src = generated_source(30)
    write_report(
        model, src, tmp_path / "whole", [1, 2], 3, batch_size=16, progress=False, command_line="t"
    )
    info2 = get_layer(model, 2)
    per_feature = 3 * 3 * info2.rf_size[0] * info2.rf_size[1] * 5
    monkeypatch.setattr(store_report, "CHUNK_BYTES", 5 * per_feature)
    assert features_per_chunk(3, 3, info2.rf_size) == 5
    sizes = []
    real = report_layers.project_seeds

    def spy(model_, images, tops, **kw):
        sizes.extend(int(t.image_index.shape[0]) for t in tops.values())
        return real(model_, images, tops, **kw)

    monkeypatch.setattr(report_layers, "project_seeds", spy)
    chunked = write_report(
        model, src, tmp_path / "chunked", [1, 2], 3, batch_size=16, progress=False, command_line="t"
    )
    n1 = features_per_chunk(3, 3, get_layer(model, 1).rf_size)
    assert sizes == [min(n1, 32 - f) for f in range(0, 32, n1)] + [5] * 12 + [4]
    a, b = (
        read_report_h5(tmp_path / "whole" / "report.h5"),
        read_report_h5(tmp_path / "chunked" / "report.h5"),
    )
    for L in (1, 2):
        for name in (
            "activation",
            "image_index",
            "position",
            "patch",
            "patch_box",
            "patch_origin",
            "label",
        ):
            assert np.array_equal(getattr(a.layers[L], name), getattr(b.layers[L], name)), name
        # Fewer seeds per call may record crops instead of whole images: equal to rounding.
        scale = float(np.abs(a.layers[L].projection).max())
        np.testing.assert_allclose(
            b.layers[L].projection, a.layers[L].projection, rtol=0, atol=1e-5 * scale
        )
    # PNGs drawn while the file was written (read back per feature) equal a redraw.
    again = render_report(tmp_path / "chunked" / "report.h5", tmp_path / "redrawn")
    assert len(again) == len([p for p in chunked if p.suffix == ".png"])
    assert folder_bytes(tmp_path / "redrawn", ".png") == folder_bytes(tmp_path / "chunked", ".png")
    rep = build_report(model, src, [1, 2], 3, batch_size=16, progress=False, command_line="t")
    save_report(rep, tmp_path / "mem", png=False)
    assert (tmp_path / "mem" / "report.h5").read_bytes() == (
        tmp_path / "chunked" / "report.h5"
    ).read_bytes()


def test_the_layer_grid_of_a_big_layer_stays_within_its_pixel_budget(tmp_path, monkeypatch):
    """Hundreds of features with large receptive fields (a deep VGG-16 layer) make a grid
    at most MAX_GRID_PX wide, from shrunk uint8 cells; small layers are drawn as before."""
    import io

    from PIL import Image

    import deconvviz.render.report_png as report_png
    from deconvviz.store.report_h5 import LayerReport

    rng = np.random.default_rng(0)
    F_, k, rf = 60, 4, (48, 48)
    lr = LayerReport(
        layer=13,
        path="features.28",
        output_size=(7, 7),
        rf_size=rf,
        rf_jump=(32, 32),
        rf_start=(-90, -90),
        activation=np.sort(rng.random((F_, k)).astype(np.float32))[:, ::-1],
        image_index=np.arange(F_ * k).reshape(F_, k),
        label=np.zeros((F_, k), np.int64),
        position=np.zeros((F_, k, 2), np.int64),
        projection=rng.standard_normal((F_, k, 3) + rf).astype(np.float32),
        patch=rng.integers(0, 256, (F_, k, 3) + rf).astype(np.uint8),
        patch_box=np.tile(np.array([0, 0, 48, 48]), (F_, k, 1)),
        patch_origin=np.zeros((F_, k, 2), np.int64),
    )
    monkeypatch.setattr(report_png, "MAX_GRID_PX", 1200)
    shrunk = []
    real = report_png._shrunk
    monkeypatch.setattr(
        report_png, "_shrunk", lambda cell, factor: shrunk.append(factor) or real(cell, factor)
    )
    fig = report_png.layer_figure(lr, "big")
    assert fig.get_figwidth() * fig.dpi <= 1200 + 1
    assert len(shrunk) == F_ and set(shrunk) == {1}  # under 2x too wide: uint8, not shrunk
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert Image.open(buf).size[0] <= 1201
    # A field three times larger shrinks its cells by block means.
    cell = report_png.layer_cell(lr, 0)
    small = report_png._shrunk(cell, 3)
    assert small.dtype == np.uint8 and small.shape == (cell.shape[0] // 3, cell.shape[1] // 3, 3)
    np.testing.assert_allclose(small[0, 0], np.round(cell[:3, :3].mean(axis=(0, 1)) * 255))


def test_a_report_traces_the_network_once(model, monkeypatch):
    """A command traces the network once, at its boundary, and hands the graph down: with
    torch.fx refusing to trace after that, a report over two layers comes out the same bytes
    as from a model traced afresh, and a graph handed to the scan and the projections of a
    model never traced serves them alone."""
    import copy

    from torchvision.models.feature_extraction import NodePathTracer

    from deconvviz.engine.net.graph import build_graph
    from deconvviz.engine.net.network import graph_of

    src = generated_source(20)
    want = build_report(copy.deepcopy(model), src, [1, 2], 3, progress=False)
    untraced = copy.deepcopy(model)
    handed = build_graph(untraced, src.image_size)
    graph_of(model, src.image_size)  # the boundary's one trace

    def refuse(self, *args, **kwargs):
        raise AssertionError("the network was traced again")

    monkeypatch.setattr(NodePathTracer, "trace", refuse)
    got = build_report(model, src, [1, 2], 3, progress=False)
    assert list(got.layers) == list(want.layers) == [1, 2]
    fields = ("activation", "image_index", "position", "projection", "patch", "patch_box")
    for L, lr in want.layers.items():
        for name in fields:
            assert np.array_equal(getattr(got.layers[L], name), getattr(lr, name)), (L, name)

    tops = scan_topk(untraced, src, [1, 2], k=3, graph=handed)
    images = {i: src.read(i, i + 1)[0] for i in range(len(src))}
    projections, _ = project_seeds(untraced, images, tops, graph=handed, windows=True)
    for L, lr in want.layers.items():
        top = finalize_topk(tops[L], len(src))
        assert torch.equal(top.image_index, torch.from_numpy(lr.image_index))
        assert np.array_equal(projections[L].numpy(), lr.projection.astype(np.float32))
    with pytest.raises(DeconvvizError, match=r"^the graph was built for another model$"):
        scan_topk(model, src, [1], k=3, graph=handed)
