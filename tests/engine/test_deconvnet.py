"""The deconvnet, proven two ways: literal hand-computed cases, and float64 agreement
with an independent autograd computation on random models."""

import pytest
import torch
import torchvision
from conftest import TINY_INPUT, alexnet_like, assert_close, reference_projection, tiny_model
from torch import nn

from deconvviz import DeconvvizError, deconvolve, project, record
from deconvviz.engine.deconv.deconvnet import RULES
from deconvviz.engine.net.layers import conv_stack, get_layer, list_layers
from deconvviz.models.architectures import CifarCNN


def _zeros_with(entries):
    out = torch.zeros(5, 5, dtype=torch.float64)
    for (r, c), v in entries.items():
        out[r, c] = v
    return out


# ----------------------------------------------------------------------------- literal cases


def test_tiny_model_switches_and_outputs_are_literal():
    m = tiny_model()
    with record(m) as rec:
        m(TINY_INPUT)
    assert torch.equal(
        rec.blocks[1].output[0],
        torch.tensor([[[1.0, 0.0], [5.0, 5.0]], [[4.0, 4.0], [1.0, 7.0]]], dtype=torch.float64),
    )
    # Flat indices into the 4x4 conv output; the 5-5 tie in channel 0 goes to the first.
    assert torch.equal(
        rec.blocks[1].switches[0], torch.tensor([[[0, 2], [9, 15]], [[5, 6], [8, 11]]])
    )
    assert torch.equal(
        rec.blocks[2].output[0, 0], torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    )


@pytest.mark.parametrize("rule", RULES)
def test_tiny_layer1_max_is_literal(rule):
    # max of channel 0 is 5 at pooled (1, 0) (first of a tie); its switch is conv-output
    # (2, 1); the filter x[i,j] - x[i+1,j+1] sends +5 to (2, 1) and -5 to (3, 2).
    p = deconvolve(tiny_model(), TINY_INPUT, 1, 0, mode="max", rule=rule)
    assert p.activation.tolist() == [5.0]
    assert p.position.tolist() == [[1, 0]]
    assert torch.equal(p.projections[0, 0], _zeros_with({(2, 1): 5.0, (3, 2): -5.0}))


def test_tiny_layer1_map_is_literal():
    # pooled values 1 (switch (0,0)), 0, 5 (switch (2,1)), 5 (switch (3,3)).
    out = project(tiny_model(), TINY_INPUT, 1, 0, mode="map")
    assert torch.equal(
        out[0, 0],
        _zeros_with(
            {(0, 0): 1.0, (1, 1): -1.0, (2, 1): 5.0, (3, 2): -5.0, (3, 3): 5.0, (4, 4): -5.0}
        ),
    )


def test_tiny_layer2_rules_differ_as_computed_by_hand():
    # layer 2 = relu(ch0 - ch1) peaks at 4 at (1, 0). Back through the 1x1 conv: +4 on
    # channel 0 (switch (2,1)), -4 on channel 1 (switch (2,0), forward value 1 > 0).
    m = tiny_model()
    deconv = project(m, TINY_INPUT, 2, 0, rule="deconvnet")[0, 0]
    guided = project(m, TINY_INPUT, 2, 0, rule="guided")[0, 0]
    grad = project(m, TINY_INPUT, 2, 0, rule="gradient")[0, 0]
    # deconvnet and guided rectify the -4 away; the gradient keeps it and the channel-1
    # filter x[i,j+1] + x[i+1,j] spreads it to (2, 1) and (3, 0).
    assert torch.equal(deconv, _zeros_with({(2, 1): 4.0, (3, 2): -4.0}))
    assert torch.equal(guided, _zeros_with({(2, 1): 4.0, (3, 2): -4.0}))
    assert torch.equal(grad, _zeros_with({(2, 1): 0.0, (3, 2): -4.0, (3, 0): -4.0}))


def test_overlapping_unpool_sums_like_the_gradient():
    # A 1-D-like case: 3-wide windows with stride 2 share their middle column.
    pool = nn.MaxPool2d((1, 3), stride=(1, 2))
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    m = nn.Sequential(conv, nn.ReLU(), pool).double()
    x = torch.tensor([[[[1.0, 2.0, 9.0, 3.0, 1.0]]]], dtype=torch.float64)
    # Both windows pick the 9 at column 2: map mode sends 9 + 9 there.
    out = project(m, x, 1, 0, mode="map")
    assert out[0, 0].tolist() == [[0.0, 0.0, 18.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------- autograd proof


def _random_cnn(seed):
    torch.manual_seed(seed)
    m = CifarCNN(hidden=8).double()
    with torch.no_grad():
        for conv in (m.features[0], m.features[3]):
            conv.bias.normal_(0, 0.1)
    return m


CASES = [
    ("cifar_cnn", lambda: _random_cnn(1), (32, 32), [1, 2]),
    ("alexnet_like", lambda: alexnet_like(2), (45, 45), [1, 2, 3]),
]


@pytest.mark.parametrize("name,make,size,layers", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", ["max", "map"])
@pytest.mark.parametrize("unpool", ["switches", "nearest"])
def test_equals_autograd_with_the_relu_rule(name, make, size, layers, rule, mode, unpool):
    model = make()
    torch.manual_seed(3)
    images = torch.randn(3, 3, *size, dtype=torch.float64)
    stack = conv_stack(model)
    for layer in layers:
        info = get_layer(model, layer, size)
        feats = torch.tensor([0, info.features // 2, info.features - 1])
        got = deconvolve(model, images, layer, feats, mode=mode, rule=rule, unpool=unpool)
        for s in range(3):
            want = reference_projection(
                stack,
                images[s : s + 1],
                info.end,
                int(feats[s]),
                mode=mode,
                rule=rule,
                unpool=unpool,
            )[0]
            assert got.projections[s].abs().sum() > 0 or want.abs().sum() == 0
            torch.testing.assert_close(got.projections[s], want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("rule", RULES)
def test_position_mode_equals_autograd(rule):
    model = alexnet_like(4)
    images = torch.randn(2, 3, 45, 45, dtype=torch.float64)
    info = get_layer(model, 2, (45, 45))
    pos = torch.tensor([[1, 2], [3, 0]])
    got = deconvolve(model, images, 2, [1, 5], mode="position", position=pos, rule=rule)
    for s in range(2):
        want = reference_projection(
            conv_stack(model),
            images[s : s + 1],
            info.end,
            [1, 5][s],
            rule=rule,
            position=tuple(pos[s].tolist()),
        )[0]
        torch.testing.assert_close(got.projections[s], want, rtol=0, atol=1e-10)


def test_batched_equals_one_at_a_time_exactly():
    model = _random_cnn(5).float()
    images = torch.randn(9, 3, 32, 32)
    feats = torch.arange(64)
    idx = torch.arange(9).repeat_interleave(64)
    fs = feats.repeat(9)
    batched = deconvolve(model, images, 2, fs, image_index=idx)
    for s in range(0, idx.numel(), 37):
        one = deconvolve(model, images[idx[s] : idx[s] + 1], 2, int(fs[s]))
        assert_close(batched.projections[s], one.projections[0], s)
        assert torch.equal(batched.position[s], one.position[0])


def test_torchvision_stacks_are_supported():
    for make, size in ((torchvision.models.alexnet, 67), (torchvision.models.vgg11, 32)):
        torch.manual_seed(0)
        feats = make().features.double()
        layers = list_layers(feats, (size, size))
        x = torch.randn(1, 3, size, size, dtype=torch.float64)
        got = deconvolve(feats, x, 2, 3)
        want = reference_projection(feats, x, layers[1].end, 3)
        torch.testing.assert_close(got.projections, want, rtol=0, atol=1e-10)


def test_shares_the_conv_weight_tensor(monkeypatch):
    model = _random_cnn(6).float()
    seen = []
    real = torch.nn.functional.conv_transpose2d

    def spy(inp, weight, *a, **k):
        seen.append(weight.data_ptr())
        return real(inp, weight, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", spy)
    x = torch.randn(1, 3, 32, 32)
    project(model, x, 2, 0, mode="map")
    assert seen == [model.features[3].weight.data_ptr(), model.features[0].weight.data_ptr()]


# ----------------------------------------------------------------------------- errors and state


def test_unsupported_module_is_named():
    # The sequential engine names what it cannot invert ...
    from deconvviz.engine.deconv.hooks import check_supported

    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with pytest.raises(DeconvvizError, match=r"module 1 \(BatchNorm2d\) is not supported"):
        check_supported(m)
    # ... and deconvolve() hands such a network to the graph engine, addressed by node name;
    # an op without a rule is refused there in one line naming the node and the op.
    assert project(m.eval(), torch.randn(1, 3, 8, 8), "2", 0).shape == (1, 3, 8, 8)
    bad = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(dim=1), nn.ReLU())
    with pytest.raises(
        DeconvvizError,
        match=r"^node '1' \(Softmax\) has no deconvnet rule, so "
        r"'2' cannot be projected through it",
    ):
        project(bad, torch.randn(1, 3, 8, 8), "2", 0)


def test_layer_and_feature_ranges_are_pinned():
    m = _random_cnn(0).float()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(
        DeconvvizError,
        match=r"^layer 3 is out of range: this network has "
        r"layers 1\.\.2 \(see 'deconvviz layers'\)$",
    ):
        project(m, x, 3, 0)
    with pytest.raises(
        DeconvvizError,
        match=r"^feature 64 is out of range: layer 2 has "
        r"features 0\.\.63 \(see 'deconvviz layers'\)$",
    ):
        project(m, x, 2, 64)
    with pytest.raises(DeconvvizError, match=r"rule must be one of deconvnet, guided, gradient"):
        project(m, x, 1, 0, rule="backprop")


def _hook_count(model):
    return sum(
        len(mod._forward_hooks) + len(mod._forward_pre_hooks) + len(mod._backward_hooks)
        for mod in model.modules()
    )


def test_no_hook_survives_and_state_is_restored():
    m = _random_cnn(0).float()
    m.train()
    m.features[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in m.parameters()]
    project(m, torch.randn(2, 3, 32, 32), 2, 1)
    assert _hook_count(m) == 0 and m.training
    assert [p.requires_grad for p in m.parameters()] == flags
    # bad argument
    with pytest.raises(DeconvvizError):
        project(m, torch.randn(2, 3, 32, 32), 2, 99)
    assert _hook_count(m) == 0 and m.training
    # a forward that raises midway (wrong channel count reaches the second conv)
    with pytest.raises(RuntimeError):
        with record(m):
            m.features(torch.randn(1, 3, 32, 32))
            raise RuntimeError("boom")
    assert _hook_count(m) == 0 and m.training
    with pytest.raises(RuntimeError):
        with record(m):
            m.features[3:](torch.randn(1, 3, 16, 16))
    assert _hook_count(m) == 0 and m.training
    assert [p.requires_grad for p in m.parameters()] == flags


def test_feature_that_never_fires_projects_to_zero():
    m = _random_cnn(0).float()
    with torch.no_grad():
        m.features[0].bias[4] = -1e6
    p = deconvolve(m, torch.randn(2, 3, 32, 32), 1, 4)
    assert p.activation.tolist() == [0.0, 0.0]
    assert torch.count_nonzero(p.projections) == 0
