"""The forward pass recorded on each seed's receptive-field crop only: projections, seeded
activations and positions equal those of the whole-image recording (to rounding in
float64, to 1e-5 relative in float32), for every rule, on stacks with strides, dilation,
padded and ceil-mode pools, at positions whose windows leave the image; and the report's
and ``deconvolve``'s choice between the two recordings."""

import pytest
import torch
from torch import nn

from conftest import (alexnet_like, random_seeds, random_topk, reference_projection,
                      vgg11_features)
from deconvviz import deconvolve
from deconvviz.engine import deconvnet, seeds as seeds_mod
from deconvviz.engine.cropped import cone, crop_pays, crop_record
from deconvviz.engine.deconvnet import RULES, project_cropped, project_recorded, recorded_forward
from deconvviz.engine.layers import get_layer, list_layers
from deconvviz.engine.seeds import project_seeds
from deconvviz.engine.topk import TopK
from deconvviz.engine.windowed import Local
from deconvviz.models.architectures import CifarCNN


def _padded_pools():
    """Dilated conv, a 3x3/2 pool with padding and ceil mode, a strided conv, a 2x2
    ceil-mode pool, an unpadded 2x2 conv."""
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=2, dilation=2), nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Conv2d(5, 6, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(6, 4, 2), nn.ReLU())


STACKS = [
    ("alexnet_like", lambda: alexnet_like(21), 45),
    ("cifar_cnn", lambda: CifarCNN(hidden=8).features, 32),
    ("vgg11_features", vgg11_features, 24),
    ("padded_ceil_pools", _padded_pools, 23),
]


def _both(model, x, info, idx, feat, pos, rule, windows):
    with torch.no_grad():
        rec = recorded_forward(model, x, info.end, masks=True)
        full = project_recorded(model, rec, info, idx, feat, mode="position", position=pos,
                                rule=rule, windows=windows)
        crop = project_cropped(model, x.contiguous(memory_format=torch.channels_last), info,
                               idx, feat, pos, rule=rule, windows=windows)
    return full, crop


@pytest.mark.parametrize("name,make,size", STACKS, ids=[s[0] for s in STACKS])
def test_cropped_recording_equals_the_whole_image_one_in_float64(name, make, size):
    model = make().double()
    torch.manual_seed(2)
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    for info in list_layers(model, (size, size)):
        idx, feat, pos = random_seeds(info, 3, 16, info.index)
        for rule in RULES:
            for windows in (False, True):
                (a, act_a, pos_a), (b, act_b, pos_b) = _both(model, x, info, idx, feat, pos,
                                                             rule, windows)
                assert a.shape == b.shape
                assert torch.equal(pos_a, pos_b)
                torch.testing.assert_close(act_b, act_a, rtol=0, atol=1e-12)
                torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
                assert float(a.abs().sum()) > 0, (name, info.index, rule)


def test_cropped_recording_matches_in_float32():
    model = alexnet_like(22).float()
    x = torch.randn(4, 3, 45, 45)
    for info in list_layers(model, (45, 45)):
        idx, feat, pos = random_seeds(info, 4, 16, 30 + info.index)
        for rule in RULES:
            (a, act_a, _), (b, act_b, _) = _both(model, x, info, idx, feat, pos, rule, False)
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * float(a.abs().max()))
            torch.testing.assert_close(act_b, act_a, rtol=1e-5, atol=1e-6)


def test_cropped_recording_holds_each_seeds_cone_and_the_full_records_values():
    model = alexnet_like(23)
    x = torch.randn(2, 3, 45, 45, dtype=torch.float64)
    info = get_layer(model, 3, (45, 45))
    pos = torch.tensor([[0, 0], [2, 3]])
    idx = torch.tensor([1, 0])
    rec, out = crop_record(model, x, info, idx, pos)
    full = recorded_forward(model, x, info.end)
    levels = cone(model, info)
    # The receptive field is the cone's window at the image.
    assert levels[0]["n_in"] == tuple(info.rf_size)
    assert out.shape == (2, info.features, 1, 1)
    for s in range(2):
        torch.testing.assert_close(out[s, :, 0, 0],
                                   full.blocks[3].output[idx[s], :, pos[s, 0], pos[s, 1]],
                                   rtol=0, atol=1e-12)
    for i, sw in rec.switches.items():
        assert isinstance(sw, Local) and sw.bounds == tuple(full.switches[i].shape[-2:])
        for s in range(2):
            oy, ox = (int(v) for v in sw.origin[s])
            nh, nw = sw.data.shape[-2:]
            ys = [y for y in range(oy, oy + nh) if 0 <= y < sw.bounds[0]]
            xs = [x_ for x_ in range(ox, ox + nw) if 0 <= x_ < sw.bounds[1]]
            got = sw.data[s][:, ys[0] - oy:ys[-1] - oy + 1, xs[0] - ox:xs[-1] - ox + 1]
            want = full.switches[i][idx[s]][:, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
            assert torch.equal(got, want), i


def test_crop_pays_for_shallow_layers_of_large_images_only():
    import torchvision
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16().eval()
    conv2_2, conv5_3 = get_layer(vgg, 4, (224, 224)), get_layer(vgg, 13, (224, 224))
    # 36 seeds on 20 images: conv2_2 sees 16x16 pixels of 224x224, conv5_3 212x212.
    assert crop_pays(vgg, conv2_2, 36, 20)
    assert not crop_pays(vgg, conv5_3, 36, 20)
    # Many seeds of one image: recording the image once is cheaper.
    assert not crop_pays(vgg, get_layer(vgg, 10, (224, 224)), 200, 1)


def test_deconvolve_records_crops_where_they_cost_less_and_equals_autograd(monkeypatch):
    model = vgg11_features(6).double()     # conv, pool, conv, pool at 64 px
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    info = get_layer(model, 2, (64, 64))
    assert crop_pays(model, info, 3, 3)
    calls = {"crop": 0, "whole": 0}
    real_crop, real_whole = deconvnet.crop_record, deconvnet.recorded_forward

    def crop_spy(*a, **k):
        calls["crop"] += 1
        return real_crop(*a, **k)

    def whole_spy(*a, **k):
        calls["whole"] += 1
        return real_whole(*a, **k)

    monkeypatch.setattr(deconvnet, "crop_record", crop_spy)
    monkeypatch.setattr(deconvnet, "recorded_forward", whole_spy)
    oh, ow = info.output_size
    pos = torch.tensor([[0, 0], [oh - 1, 3], [7, ow - 1]])
    for rule in RULES:
        got = deconvolve(model, x, 2, [1, 5, 9], image_index=[2, 0, 2], mode="position",
                         position=pos, rule=rule)
        for s, (i, f) in enumerate([(2, 1), (0, 5), (2, 9)]):
            want = reference_projection(model, x[i:i + 1], info.end, f,
                                        position=tuple(pos[s].tolist()), rule=rule)[0]
            torch.testing.assert_close(got.projections[s], want, rtol=0, atol=1e-12)
    assert calls == {"crop": 3, "whole": 0}
    deconvolve(model, x, 2, 1, mode="max")          # positions unknown: the whole images
    assert calls == {"crop": 3, "whole": 1}


def test_project_seeds_takes_crops_per_layer_where_they_pay(monkeypatch):
    model = vgg11_features(6)
    g = torch.Generator().manual_seed(1)
    images = {i: torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
              for i in (3, 8, 11, 20)}
    tops = {info.index: random_topk(info, images, 3, g) for info in list_layers(model, (64, 64))}
    monkeypatch.setattr(seeds_mod, "crop_applies", lambda *a: False)
    whole, acts_whole = project_seeds(model, images, tops, mean=[0.5] * 3, std=[0.25] * 3,
                                      windows=True)
    used = []
    monkeypatch.setattr(seeds_mod, "crop_applies", lambda *a: used.append(a[1].index) or True)
    crop, acts_crop = project_seeds(model, images, tops, mean=[0.5] * 3, std=[0.25] * 3,
                                    windows=True)
    assert sorted(used) == [1, 2]
    for L in tops:
        scale = float(whole[L].abs().max())
        assert scale > 0
        torch.testing.assert_close(crop[L], whole[L], rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(acts_crop[L], acts_whole[L], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["plain", "graph"])
def test_project_seeds_of_a_chunk_of_features_are_those_rows_of_the_whole_layer(family):
    """A report projects a layer in chunks of features: rows f0.. of a chunk are
    features f0.., on both engines."""
    if family == "plain":
        model, layer, size = alexnet_like(24).float(), 2, 45
        from deconvviz.engine.layers import get_layer as info_of
    else:
        import torchvision
        from deconvviz.engine.network import resolve_info as info_of
        torch.manual_seed(3)
        model, layer, size = torchvision.models.resnet18().eval(), "layer1.0.relu_1", 64
    info = info_of(model, layer, (size, size))
    g = torch.Generator().manual_seed(8)
    images = {i: torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
              for i in (0, 4, 9)}
    top = random_topk(info, images, 2, g)
    norm = dict(mean=[0.4] * 3, std=[0.3] * 3)
    whole, acts = project_seeds(model, images, {layer: top}, windows=True, **norm)
    f0, f1 = 3, 7
    part = TopK(top.activation[f0:f1], top.image_index[f0:f1], top.position[f0:f1])
    chunk, chunk_acts = project_seeds(model, images, {layer: part}, windows=True,
                                      first_feature=f0, **norm)
    scale = float(whole[layer][f0:f1].abs().max())
    assert scale > 0
    torch.testing.assert_close(chunk[layer], whole[layer][f0:f1], rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(chunk_acts[layer], acts[layer][f0:f1], rtol=1e-5, atol=1e-6)
    # Without the offset the rows would be features 0.. instead: they differ.
    wrong, _ = project_seeds(model, images, {layer: part}, windows=True, **norm)
    assert not torch.allclose(wrong[layer], whole[layer][f0:f1])
