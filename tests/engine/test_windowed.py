"""Projections inside the receptive field only: equal to the full-image reverse pass
(to 1e-12 of the largest value in float64, 1e-6 in float32), on stacks with strides, dilation, padding,
overlapping and ceil-mode pools, at positions whose windows leave the image."""

import pytest
import torch
from torch import nn

from conftest import (alexnet_like, assert_close, random_seeds, reference_projection,
                      vgg11_features)
from deconvviz import deconvolve, record
from deconvviz.engine import deconvnet, windowed
from deconvviz.engine.deconvnet import RULES, project_recorded, reverse_pass, seed_maps
from deconvviz.engine.layers import conv_stack, get_layer, list_layers
from deconvviz.engine.receptive import cut_windows, windows_for
from deconvviz.engine.recording import record_pass
from deconvviz.engine.seeds import project_seeds
from deconvviz.engine.topk import TopK
from deconvviz.models.architectures import CifarCNN


def _both_ways(model, images, info, idx, feat, pos, rule):
    with torch.no_grad(), record(model, stop=info.end) as rec:
        conv_stack(model)[:info.end](images.contiguous(memory_format=torch.channels_last))
        fast, act, _ = project_recorded(model, rec, info, idx, feat, mode="position",
                                        position=pos, rule=rule)
        win, _, _ = project_recorded(model, rec, info, idx, feat, mode="position",
                                     position=pos, rule=rule, windows=True)
        seeds, act2, _ = seed_maps(rec.blocks[info.index].output, idx, feat, "position", pos)
        full = reverse_pass(model, rec, info.end, seeds, idx, rule=rule)
    assert torch.equal(act, act2)
    return fast, win, full


STACKS = [
    ("alexnet_like", lambda: alexnet_like(11), 45),
    ("cifar_cnn", lambda: CifarCNN(hidden=8).features, 32),
    ("vgg11_features", vgg11_features, 24),
]


@pytest.mark.parametrize("name,make,size", STACKS, ids=[s[0] for s in STACKS])
@pytest.mark.parametrize("rule", RULES)
def test_window_pass_equals_the_full_pass_in_float64(name, make, size, rule):
    model = make().double()
    torch.manual_seed(1)
    images = torch.randn(3, 3, size, size, dtype=torch.float64)
    for info in list_layers(model, (size, size)):
        idx, feat, pos = random_seeds(info, 3, 12, info.index)
        fast, win, full = _both_ways(model, images, info, idx, feat, pos, rule)
        assert_close(fast, full, (name, info.index))
        box, origin = windows_for(info, pos)
        # The full pass is zero outside the receptive field; the window holds the rest.
        assert_close(cut_windows(full, box, origin, info.rf_size), win, (name, info.index))
        assert float(win.abs().sum()) == pytest.approx(float(full.abs().sum()), rel=1e-12)
        assert win.shape == (12, 3) + tuple(info.rf_size)


@pytest.mark.parametrize("rule", RULES)
def test_window_pass_matches_the_full_pass_in_float32(rule):
    model = alexnet_like(12).float()
    images = torch.randn(4, 3, 45, 45)
    for info in list_layers(model, (45, 45)):
        idx, feat, pos = random_seeds(info, 4, 16, 10 + info.index)
        fast, _, full = _both_ways(model, images, info, idx, feat, pos, rule)
        torch.testing.assert_close(fast, full, rtol=0, atol=1e-6)


def test_window_pass_equals_autograd_at_clipped_corners():
    model = alexnet_like(13)
    images = torch.randn(2, 3, 45, 45, dtype=torch.float64)
    info = get_layer(model, 3, (45, 45))
    oh, ow = info.output_size
    pos = torch.tensor([[0, 0], [oh - 1, ow - 1]])
    got = deconvolve(model, images, 3, [2, 9], mode="position", position=pos)
    for s in range(2):
        want = reference_projection(model, images[s:s + 1], info.end, [2, 9][s],
                                    position=tuple(pos[s].tolist()))[0]
        assert want.abs().sum() > 0
        torch.testing.assert_close(got.projections[s], want, rtol=0, atol=1e-12)


def test_deconvolve_takes_the_window_path_and_records_used_images_to_the_layer(monkeypatch):
    model = alexnet_like(14)
    images = torch.randn(5, 3, 45, 45, dtype=torch.float64)
    calls = {"window": 0, "reverse": 0, "recorded": []}
    real_window, real_reverse = windowed.window_pass, deconvnet.reverse_pass
    real_forward = deconvnet.recorded_forward

    def window_spy(*a, **k):
        calls["window"] += 1
        return real_window(*a, **k)

    def reverse_spy(*a, **k):
        calls["reverse"] += 1
        return real_reverse(*a, **k)

    def forward_spy(m, x, end, **kw):
        calls["recorded"].append((x.shape[0], end))
        return real_forward(m, x, end, **kw)

    monkeypatch.setattr(deconvnet, "window_pass", window_spy)
    monkeypatch.setattr(deconvnet, "reverse_pass", reverse_spy)
    monkeypatch.setattr(deconvnet, "recorded_forward", forward_spy)
    info = get_layer(model, 2, (45, 45))
    # Seeds on images 1 and 3 only, image 3 twice: two images recorded, up to layer 2's end.
    got = deconvolve(model, images, 2, [0, 4, 7], image_index=[3, 1, 3], mode="max")
    assert calls == {"window": 1, "reverse": 0, "recorded": [(2, info.end)]}
    for s, (i, f) in enumerate([(3, 0), (1, 4), (3, 7)]):
        want = reference_projection(model, images[i:i + 1], info.end, f)[0]
        torch.testing.assert_close(got.projections[s], want, rtol=0, atol=1e-12)
    deconvolve(model, images, 2, 0, mode="map")
    assert calls["reverse"] == 1 and calls["window"] == 1


def test_project_seeds_windows_come_from_the_window_pass_without_full_images(monkeypatch):
    model = alexnet_like(15)
    images = {i: torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for i in (2, 5, 8)}
    gen = torch.Generator().manual_seed(3)
    tops = {}
    for info in list_layers(model, (40, 40)):
        F_, k = info.features, 3
        oh, ow = info.output_size
        pos = torch.stack([torch.randint(0, oh, (F_, k), generator=gen),
                           torch.randint(0, ow, (F_, k), generator=gen)], dim=-1)
        pos[0] = torch.tensor([[0, 0], [oh - 1, ow - 1], [0, ow - 1]])
        idx = torch.tensor([2, 5, 8])[torch.randint(0, 3, (F_, k), generator=gen)]
        tops[info.index] = TopK(torch.zeros(F_, k), idx, pos)
    full, acts = project_seeds(model, images, tops, mean=[0.0] * 3, std=[1.0] * 3)
    canvases = []
    real_paste = deconvnet.paste_windows

    def paste_spy(win, origin, canvas_origin, size):
        canvases.append(tuple(size))
        return real_paste(win, origin, canvas_origin, size)

    monkeypatch.setattr(deconvnet, "paste_windows", paste_spy)
    win, acts2 = project_seeds(model, images, tops, mean=[0.0] * 3, std=[1.0] * 3,
                               windows=True, images_per_pass=2)
    for info in list_layers(model, (40, 40)):
        L, t = info.index, tops[info.index]
        assert torch.equal(acts[L], acts2[L])
        box, origin = windows_for(info, t.position.reshape(-1, 2))
        flat = full[L].reshape(-1, 3, 40, 40)
        want = cut_windows(flat, box, origin, info.rf_size).reshape(win[L].shape)
        assert torch.equal(win[L], want)
    assert canvases and all(c != (40, 40) for c in canvases)


def test_paste_windows_places_and_clips():
    w = torch.arange(1, 1 + 2 * 3 * 3, dtype=torch.float64).view(2, 1, 3, 3)
    w[1, :, 0, :] = 0  # the row of seed 1 that falls off the canvas is zero
    out = windowed.paste_windows(w, torch.tensor([[1, 2], [-1, 0]]), torch.zeros(2, 2,
                                 dtype=torch.int64), (4, 4))
    assert torch.equal(out[0, 0, 1:4, 2:4], w[0, 0, :, :2])
    assert float(out[0].sum()) == float(w[0, 0, :, :2].sum())
    assert torch.equal(out[1, 0, 0:2, 0:3], w[1, 0, 1:, :])
    assert float(out[1].sum()) == float(w[1].sum())


def test_many_seeds_go_in_bounded_batches(monkeypatch):
    model = alexnet_like(16)
    images = torch.randn(2, 3, 45, 45, dtype=torch.float64)
    info = get_layer(model, 3, (45, 45))
    per_seed = windowed.window_bytes_per_seed(model, info, torch.float64)
    monkeypatch.setattr(deconvnet, "SEED_BATCH_BYTES", 5 * per_seed)
    idx, feat, pos = random_seeds(info, 2, 23, 4)
    got = deconvolve(model, images, 3, feat, image_index=idx, mode="position", position=pos)
    monkeypatch.setattr(deconvnet, "SEED_BATCH_BYTES", 10 ** 12)
    one = deconvolve(model, images, 3, feat, image_index=idx, mode="position", position=pos)
    assert_close(got.projections, one.projections)


def test_recording_for_projections_keeps_only_what_they_need():
    model = CifarCNN(hidden=8)
    with torch.no_grad(), record(model, stop=6, masks=False, activations=False) as rec:
        model.features(torch.randn(2, 3, 32, 32))
    assert rec.blocks[1].output is None and rec.blocks[1].activation is None
    assert rec.blocks[2].output.shape == (2, 64, 8, 8) and rec.blocks[2].activation is None
    assert sorted(rec.switches) == [2, 5] and not rec.masks
    assert all(not m._forward_hooks for m in model.modules())
    # The hook-free pass of the projections records the same switches and output.
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record(model, stop=6, masks=True, activations=False) as rec:
        model.features(x)
        fast = record_pass(model, x, 6)
    assert torch.equal(fast.blocks[2].output, rec.blocks[2].output)
    for i in (2, 5):
        assert torch.equal(fast.switches[i], rec.switches[i])
    for i in (1, 4):
        assert torch.equal(fast.masks[i], rec.masks[i])
    assert fast.in_sizes == rec.in_sizes


def test_grouped_convolutions_fall_back_to_the_full_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 4, 3, padding=1, groups=2), nn.ReLU()).double()
    x = torch.randn(2, 4, 12, 12, dtype=torch.float64)
    got = deconvolve(model, x, 2, [1, 3])
    for s, f in enumerate([1, 3]):
        want = reference_projection(model, x[s:s + 1], 5, f)[0]
        torch.testing.assert_close(got.projections[s], want, rtol=0, atol=1e-12)
