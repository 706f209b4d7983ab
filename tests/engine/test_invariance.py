"""Invariance transforms and curves (Zeiler & Fergus Figure 5) against direct computations."""

from __future__ import annotations

import pytest
import torch

from deconvviz import DeconvvizError, load_model
from deconvviz.engine.features import extract_features, parse_feature_layer
from deconvviz.engine.invariance import amount_range, invariance_curves, transform_images

FILL = torch.tensor([0.25, -0.5, 2.0], dtype=torch.float64)


def _images(b=2, h=9, w=9, seed=0):
    return torch.randn(
        b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


@pytest.mark.parametrize(
    "kind,amount",
    [
        ("translate", 0),
        ("translate", -0.0),
        ("scale", 1),
        ("rotate", 0),
        ("rotate", 360),
        ("rotate", -720),
    ],
)
def test_identity_amounts_return_the_image_exactly(kind, amount):
    x = _images()
    before = x.clone()
    assert torch.equal(transform_images(x, kind, amount, FILL), x)
    assert torch.equal(x, before)  # input untouched


def test_quarter_turns_are_rot90_counter_clockwise():
    x = _images(h=8, w=8)
    assert torch.equal(transform_images(x, "rotate", 90, FILL), torch.rot90(x, 1, (2, 3)))
    assert torch.equal(transform_images(x, "rotate", 180, FILL), torch.rot90(x, 2, (2, 3)))
    assert torch.equal(transform_images(x, "rotate", -90, FILL), torch.rot90(x, -1, (2, 3)))
    # a visible example: the top-right corner pixel goes to the top-left
    t = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    t[0, :, 0, 2] = 1.0
    assert torch.equal(
        transform_images(t, "rotate", 90, FILL)[0, :, 0, 0], torch.ones(3, dtype=torch.float64)
    )


@pytest.mark.parametrize("shift", [3, -2])
def test_whole_pixel_translation_is_a_shift_with_grey_border(shift):
    x = _images(h=7, w=5)
    fill = FILL.view(1, 3, 1, 1).expand(2, 3, abs(shift), 5)
    if shift > 0:  # content moves down, border on top
        expected = torch.cat([fill, x[:, :, :-shift]], dim=2)
    else:
        expected = torch.cat([x[:, :, -shift:], fill], dim=2)
    assert torch.equal(transform_images(x, "translate", shift, FILL), expected)


def test_half_pixel_translation_averages_neighbouring_rows():
    x = _images(h=4, w=3)
    out = transform_images(x, "translate", 0.5, FILL)
    above = torch.cat([FILL.view(1, 3, 1, 1).expand(2, 3, 1, 3), x[:, :, :-1]], dim=2)
    torch.testing.assert_close(out, 0.5 * (x + above), rtol=0, atol=1e-12)


def test_scale_two_zooms_into_the_centre():
    x = _images(h=8, w=8)
    out = transform_images(x, "scale", 2.0, FILL)
    # output pixel (y, x) samples (3.5 + (y - 3.5) / 2): pixel (1, 1) samples (2.25, 2.25)
    w = torch.tensor([[0.75 * 0.75, 0.75 * 0.25], [0.25 * 0.75, 0.25 * 0.25]], dtype=torch.float64)
    expected = (x[:, :, 2:4, 2:4] * w).sum(dim=(2, 3))
    torch.testing.assert_close(out[:, :, 1, 1], expected, rtol=0, atol=1e-12)
    # zooming out fills the border
    small = transform_images(x, "scale", 0.5, FILL)
    assert torch.equal(small[0, :, 0, 0], FILL)


def test_amount_range_parsing():
    assert amount_range("-2:2:1", "translate") == [-2, -1, 0, 1, 2]
    assert amount_range("0:360:90", "rotate") == [0, 90, 180, 270, 360]
    assert amount_range("0.6:1.0:0.1", "scale") == [0.6, 0.7, 0.8, 0.9, 1.0]
    assert amount_range("0, 45", "rotate") == [0, 45]
    assert amount_range([1, 2], "scale") == [1, 2]


@pytest.mark.parametrize(
    "text,kind,message",
    [
        ("5:0:1", "translate", "translate range '5:0:1' has no points"),
        ("0:5:0", "translate", "has no points"),
        ("", "rotate", "rotate range '' has no points"),
        ("a:b", "rotate", "is not START:STOP:STEP"),
        ("0:1:0.5", "scale", "scale factors must be positive; got 0"),
    ],
)
def test_bad_ranges_are_one_line(text, kind, message):
    with pytest.raises(DeconvvizError, match=message) as info:
        amount_range(text, kind)
    assert "\n" not in str(info.value)


def _direct_features(model, x):
    """Layer 1, layer 2 and classifier input of the CifarCNN, computed by hand."""
    with torch.no_grad():
        l1 = model.features[:3](x)
        l2 = model.features(x)
        fc = model.classifier[:-1](l2)
        return [
            l1.flatten(1).double(),
            l2.flatten(1).double(),
            fc.flatten(1).double(),
        ], torch.softmax(model.classifier(l2).double(), dim=1)


def test_curves_against_a_direct_computation(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    model.train()  # left as found, also the mode
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, -1, 7])
    curves = invariance_curves(model, x, labels, "rotate", "0:360:90", (1, 2, "classifier"))
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert [fl.describe() for fl in curves.layers] == ["layer 1", "layer 2", "classifier input"]
    assert curves.distance.shape == (3, 3, 5) and curves.probability.shape == (3, 5)
    assert torch.all(curves.distance[:, :, 0] == 0) and torch.all(curves.distance[:, :, 4] == 0)
    model.eval()
    grey = (0.5 - torch.tensor([0.5] * 3)) / torch.tensor([0.25] * 3)  # the tiny model's norm
    base, p0 = _direct_features(model, x)
    label = torch.where(labels < 0, p0.argmax(dim=1), labels)
    assert torch.equal(curves.label, label)
    for a_i, angle in enumerate([0, 90, 180, 270, 360]):
        feats, p = _direct_features(model, transform_images(x, "rotate", angle, grey))
        for li in range(3):
            torch.testing.assert_close(
                curves.distance[li, :, a_i],
                (feats[li] - base[li]).norm(dim=1),
                rtol=1e-5,
                atol=1e-6,
            )
        torch.testing.assert_close(
            curves.probability[:, a_i], p[torch.arange(3), label], rtol=1e-5, atol=1e-7
        )
    norms = torch.stack([b.norm(dim=1).mean() for b in base])
    torch.testing.assert_close(curves.norm, norms, rtol=1e-6, atol=0)
    torch.testing.assert_close(curves.normalised, curves.distance / norms.view(3, 1, 1))


def test_extract_features_leaves_no_hook_when_the_forward_raises(tiny_checkpoint):
    model = load_model(tiny_checkpoint)

    def boom(module, inputs):
        raise RuntimeError("boom")

    handle = model.classifier[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(model, torch.zeros(1, 3, 32, 32), [1, "classifier"])
    handle.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    "layers,message",
    [
        ((1, 5), r"^layer 5 is out of range: this network has layers 1\.\.2"),
        (("head",), r"^no node named 'head' in CifarCNN"),
        ((0,), r"^layer 0 is out of range"),
    ],
)
def test_a_layer_that_does_not_exist_is_one_line(tiny_checkpoint, layers, message):
    model = load_model(tiny_checkpoint)
    with pytest.raises(DeconvvizError, match=message):
        invariance_curves(model, torch.zeros(1, 3, 32, 32), None, "scale", "1:2:1", layers)


def test_classifier_input_needs_a_linear():
    stack = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU())
    with pytest.raises(DeconvvizError, match="has no nn.Linear"):
        extract_features(stack, torch.zeros(1, 3, 8, 8), ["classifier"])
    assert parse_feature_layer("fc").describe() == "classifier input"


def test_any_network_by_node_name_equals_torchvisions_feature_extractor():
    """Feature vectors at graph nodes of a ResNet (random weights) equal what torchvision's
    own create_feature_extractor returns; the invariance distance is 0 at amount 0."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(3, 3, 64, 64)
    nodes = ["layer1.0.relu_1", "layer2.1.relu_1"]
    feats, logits = extract_features(model, x, nodes + ["classifier"])
    ref = create_feature_extractor(model, nodes + ["flatten", "fc"])(x)
    for name in nodes:
        got = feats[parse_feature_layer(name)]
        assert torch.allclose(got, ref[name].flatten(1).double(), atol=1e-5)
    assert torch.allclose(
        feats[parse_feature_layer("classifier")], ref["flatten"].double(), atol=1e-5
    )
    assert torch.allclose(logits, ref["fc"].double(), atol=1e-5)
    assert parse_feature_layer("layer2.1.relu_1").describe() == "node layer2.1.relu_1"
    curves = invariance_curves(model, x[:1], None, "rotate", "0,90", nodes)
    assert [fl.key for fl in curves.layers] == nodes
    assert curves.distance.shape == (2, 1, 2)
    assert (curves.distance[:, 0, 0] == 0).all() and (curves.distance[:, 0, 1] > 0).all()
    with pytest.raises(DeconvvizError, match=r"^no node named 'layer9' in ResNet"):
        extract_features(model, x, ["layer9"])
