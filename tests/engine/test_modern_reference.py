"""The float64 reference for modern CNNs (tests/engine/modern_reference.py) proven on its
own: on ReLU networks it equals the ReLU reference of graph_reference.py; on a tiny
hand-set SiLU / gate / LayerNorm graph it gives the values derived by hand; with gates
held it is autograd on the unmodified network; ops without a rule are refused; and the
networks of issue 19 trace (deconvviz's tracer and the reference's) and run unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from graph_reference import one_thread, reference, zoo_model, zoo_size  # noqa: F401
from modern_reference import (
    MODERN_ZOO,
    RULES,
    Unsupported,
    modern_model,
    modern_reference,
    modern_size,
    rule_forward,
    rule_trace,
)
from torch import nn

from deconvviz.engine.net.trace import trace


def _images(n, size, seed=0):
    return torch.randn(
        n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


# ----------------------------------------------------------------------------- ReLU networks

# Module outputs that torchvision keeps whole (features.4.conv.0, inception4a), functions
# (add, cat, F.relu), repeated module calls (relu_1) and logits.
RELU_NODES = {
    "resnet18": ("layer1.1.relu_1", "layer3.0.add", "fc"),
    "mobilenet_v2": ("features.4.conv.0", "features.10.add"),
    "googlenet": ("inception4a", "maxpool3"),
    "vgg11_bn": ("features.10", "classifier.4"),
    "densenet121": ("features.denseblock2.denselayer3.relu2", "relu"),
}


@pytest.mark.parametrize("name", sorted(RELU_NODES))
def test_relu_networks_give_the_relu_reference(name):
    model, size = zoo_model(name), zoo_size(name)
    images = _images(2, size, seed=1)
    seeds = {node: [1, 3] for node in RELU_NODES[name]}
    unpools = ("switches", "nearest") if name in ("vgg11_bn", "googlenet") else ("switches",)
    for unpool in unpools:
        want = reference(model, images, seeds, RULES, unpool=unpool)
        got = modern_reference(model, images, seeds, RULES, unpool=unpool)
        for rule in RULES:
            for node in seeds:
                g, p, a = got[rule][node]
                w, wp, wa = want[rule][node]
                assert torch.equal(p, wp) and torch.equal(a, wa)
                assert_close(g, w, msg=(name, unpool, rule, node))
        assert float(want["deconvnet"][RELU_NODES[name][0]][0].abs().max()) > 0


# ----------------------------------------------------------------------------- by hand

W = ((1.0, 0.5), (-0.5, 1.0))  # the 1x1 conv, (out, in)
NORM_W, NORM_B, EPS = (-2.0, 1.5), (0.1, -0.2), 1e-5
# Per image: the conv's output a[channel][position] over a 1x2 image. Image 0: a0 at the
# seeded position where SiLU's slope is negative (-2), the backward signal positive;
# image 1: slope and signal positive; image 2: the signal negative.
A = (((0.0, -2.0), (0.0, -1.3)), ((0.3, 1.5), (-0.4, 0.2)), ((-0.5, 1.0), (0.8, 2.5)))


class SiluGateNorm(nn.Module):
    """conv 1x1 -> SiLU -> x * sigmoid(mean(x)) (a squeeze-and-excitation gate) ->
    LayerNorm over channels (channels-last, as ConvNeXt's LayerNorm2d)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(2, eps=EPS)
        self.double()
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(W, dtype=torch.float64).view(2, 2, 1, 1))
            self.norm.weight.copy_(torch.tensor(NORM_W, dtype=torch.float64))
            self.norm.bias.copy_(torch.tensor(NORM_B, dtype=torch.float64))

    def forward(self, x):
        h = self.act(self.conv(x))
        y = h * torch.sigmoid(h.mean((2, 3), keepdim=True))
        return self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _sig(t):
    return 1.0 / (1.0 + math.exp(-t))


def _silu(t):
    return t * _sig(t)


def _silu_slope(t):
    return _sig(t) * (1.0 + t * (1.0 - _sig(t)))


def _by_hand(a, rule):
    """The input gradient of z0*z0.detach() at position 1, derived on paper: the gate and
    the norm's statistics held, only channel 0 at position 1 moves back."""
    h = [[_silu(v) for v in row] for row in a]
    s = [_sig(sum(row) / 2) for row in h]
    y0, y1 = h[0][1] * s[0], h[1][1] * s[1]
    mu, var = (y0 + y1) / 2, ((y0 - y1) / 2) ** 2
    sigma = math.sqrt(var + EPS)
    z0 = (y0 - mu) / sigma * NORM_W[0] + NORM_B[0]
    g = z0 * NORM_W[0] / sigma * s[0]  # at a[0][1]
    slope = _silu_slope(a[0][1])
    back = {
        "deconvnet": max(g, 0.0),
        "gradient": g * slope,
        "guided": max(g, 0.0) * max(slope, 0.0),
    }[rule]
    grad = torch.zeros(2, 1, 2, dtype=torch.float64)
    grad[:, 0, 1] = torch.tensor([W[0][0] * back, W[0][1] * back], dtype=torch.float64)
    return grad, z0


def test_silu_gate_layernorm_by_hand():
    model = SiluGateNorm().eval()
    det = W[0][0] * W[1][1] - W[0][1] * W[1][0]
    inv = ((W[1][1] / det, -W[0][1] / det), (-W[1][0] / det, W[0][0] / det))
    x = torch.tensor(
        [
            [[[inv[c][0] * a[0][p] + inv[c][1] * a[1][p] for p in range(2)]] for c in range(2)]
            for a in A
        ],
        dtype=torch.float64,
    )
    seeds, positions = {"permute_1": [0, 0, 0]}, {"permute_1": [(0, 1)] * 3}
    got = modern_reference(model, x, seeds, RULES, positions=positions)
    for rule in RULES:
        grads, pos, act = got[rule]["permute_1"]
        for i, a in enumerate(A):
            want, z0 = _by_hand(a, rule)
            assert abs(float(act[i]) - z0) <= 1e-12 * abs(z0)
            assert_close(grads[i], want, msg=(rule, i))
    g = {rule: got[rule]["permute_1"][0] for rule in RULES}
    # The cases the images were chosen for: the rules differ as the contract says.
    assert float(g["deconvnet"][0, 0, 0, 1]) > 0 and float(g["gradient"][0, 0, 0, 1]) < 0
    assert float(g["guided"][0].abs().max()) == 0
    assert_close(g["guided"][1], g["gradient"][1])
    assert float(g["deconvnet"][2].abs().max()) == 0 and float(g["gradient"][2].abs().max()) > 0


def test_group_and_instance_norm_hold_their_statistics():
    """The gradient of ``sum(c * norm(x))`` with statistics held is ``c * w / sigma`` of
    each image's group: nothing flows between positions or channels."""

    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.gn, self.inorm = nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True)

        def forward(self, x):
            return self.gn(x), self.inorm(x)

    model = Norms().double().eval()
    with torch.no_grad():
        for m in (model.gn, model.inorm):
            m.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 1.5], dtype=torch.float64))
            m.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    x = torch.randn(
        2,
        4,
        3,
        3,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
        requires_grad=True,
    )
    c = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, _ = rule_forward(model, x, (), {"rule": "gradient"})
    with torch.no_grad():
        want = model(x)
    weight = model.gn.weight.detach().view(1, 4, 1, 1)
    for got, ref, groups in ((out[0], want[0], 2), (out[1], want[1], 4)):
        assert_close(got.detach(), ref)
        (grad,) = torch.autograd.grad((got * c).sum(), x)
        var = x.detach().reshape(2, groups, -1).var(-1, unbiased=False)
        sigma = (var + 1e-5).sqrt().repeat_interleave(4 // groups, 1).view(2, 4, 1, 1)
        assert_close(grad, c * weight / sigma)


# ----------------------------------------------------------------------------- refusals


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv, self.fn = nn.Conv2d(3, 3, 1), fn

    def forward(self, x):
        return self.fn(self.conv(x))


@pytest.mark.parametrize(
    "fn, message",
    [
        (
            lambda h: h * h.mean((2, 3), keepdim=True),
            r"^node 'mul' \(product of two signals 'conv' "
            r"and 'mean'\) carries the signal and the "
            r"reference has no rule for it$",
        ),
        (lambda h: F.softmax(h, dim=1), r"^node 'softmax' \(softmax\) carries the signal "),
        (
            lambda h: torch.sigmoid(h) + h,
            r"^gate 'sigmoid' reaches 'add' \(<built-in function "
            r"add>\), not only products$",
        ),
        (lambda h: h * torch.sigmoid(h), r"^node 'mul' multiplies 'conv' by its own sigmoid "),
    ],
)
def test_ops_without_a_rule_are_refused(fn, message):
    model = _Fn(fn).double().eval()
    with pytest.raises(Unsupported, match=message):
        modern_reference(model, _images(1, 4), {"conv": [0]}, "deconvnet")


# ----------------------------------------------------------------------------- the networks


def _module_nodes(name):
    """Two activation modules called once, a third and two thirds into the network."""
    model = modern_model(name)
    rt = rule_trace(model)
    acts = [
        path
        for path, outs in rt.module_outputs.items()
        if len(outs) == 1
        and isinstance(model.get_submodule(path), (nn.ReLU, nn.SiLU, nn.Hardswish, nn.GELU))
    ]
    return acts[len(acts) // 3], acts[2 * len(acts) // 3]


@pytest.mark.parametrize("name", sorted(MODERN_ZOO))
def test_modern_networks_trace_and_run_unchanged(name):
    """deconvviz's tracer names every node once; the reference's forward pass (rules
    in place) gives the network's own output."""
    if name.startswith("timm_"):
        pytest.importorskip("timm")
    model, size = modern_model(name), modern_size(name)
    graph, names, visible = trace(model)
    assert len(set(names.values())) == len(names) and visible <= set(names.values())
    x = _images(2, size)
    out, _ = rule_forward(model, x, (), {"rule": "deconvnet"})
    with torch.no_grad():
        want = model(x)
    assert_close(out.detach(), want)


GATED = (
    "tv_efficientnet_b0",
    "tv_mobilenet_v3_large",
    "tv_regnet_y_400mf",
    "timm_efficientnet_b0",
    "timm_mobilenetv3_small_100",
    "timm_resnet50",
    "tv_shufflenet_v2",
)


@pytest.mark.parametrize("name", GATED)
def test_gradient_rule_is_autograd_with_the_gates_held(name):
    """Rule ``gradient`` on networks without per-image normalisation: autograd through
    the unmodified network, where a forward hook holds each gate module's output."""
    if name.startswith("timm_"):
        pytest.importorskip("timm")
    model, size = modern_model(name), modern_size(name)
    nodes = _module_nodes(name)
    x = _images(2, size, seed=2)
    with torch.no_grad():
        _, values = rule_forward(model, x, nodes, {"rule": "gradient"})
    # per image the channel that fires most (random weights leave some channels dead)
    features = {n: v.amax((2, 3)).argmax(1).tolist() for n, v in values.items()}
    got = modern_reference(model, x, features, "gradient")
    outs, handles = {}, []
    try:
        for m in model.modules():
            if isinstance(m, (nn.Sigmoid, nn.Hardsigmoid)):
                handles.append(m.register_forward_hook(lambda mod, i, o: o.detach()))
        for n in nodes:
            handles.append(
                model.get_submodule(n).register_forward_hook(
                    lambda mod, i, o, n=n: outs.__setitem__(n, o)
                )
            )
        xr = x.clone().requires_grad_(True)
        model(xr)
    finally:
        for h in handles:
            h.remove()
    for n in nodes:
        grads, pos, act = got[n]
        target = sum(
            outs[n][s, f, r, c] * outs[n][s, f, r, c].detach()
            for s, (f, (r, c)) in enumerate(zip(features[n], pos.tolist()))
        )
        (want,) = torch.autograd.grad(target, xr, retain_graph=True)
        assert float(want.abs().max()) > 0
        assert_close(grads, want, msg=(name, n))


def _extracted(create_feature_extractor, model, picks, x):
    """The library's feature extractor's values, each as it was made (a later in-place op,
    ReLU(inplace=True) or ``x += y``, would change what the extractor returns)."""
    fe = create_feature_extractor(model, picks).eval()
    out = next(n for n in fe.graph.nodes if n.op == "output")
    cloned = {}
    for key, node in out.args[0].items():
        with fe.graph.inserting_after(node):
            cloned[key] = fe.graph.call_method("clone", (node,))
    out.args = (cloned,)
    fe.recompile()
    with torch.no_grad():
        return fe(x)


def _hooked(model, picks, x):
    """The outputs of the modules ``picks``, by forward hooks on the network itself."""
    outs, handles = {}, []
    try:
        for n in picks:
            handles.append(
                model.get_submodule(n).register_forward_hook(
                    lambda mod, i, o, n=n: outs.__setitem__(n, o.clone())
                )
            )
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


@pytest.mark.parametrize("name", sorted(MODERN_ZOO))
def test_names_address_what_feature_extraction_returns(name):
    """A node name (torchvision's, or timm's where timm keeps a module whole) gives the
    value that the library's own feature extractor returns for it; where the extractor
    cannot trace the network (timm's ConvNeXt: a parameter's get_attr node has no name),
    every module path among deconvviz's node names is checked against a forward hook."""
    if name.startswith("timm_"):
        pytest.importorskip("timm")
        from timm.models import create_feature_extractor, get_graph_node_names
    else:
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )
    model, size = modern_model(name), modern_size(name)
    x = _images(1, size, seed=3)
    names = get_graph_node_names(model)[1]
    picks = [
        n
        for n in names[1 :: max(1, len(names) // 12)]
        if not n.endswith(("size", "getattr", "eq", "_assert"))
    ]
    try:
        want = _extracted(create_feature_extractor, model, picks, x)
    except KeyError:
        paths = dict(model.named_modules())
        calls = rule_trace(model).module_outputs
        picks = [n for n in trace(model)[1].values() if n in paths and len(calls.get(n, ())) == 1]
        want = _hooked(model, picks, x)
    with torch.no_grad():
        _, got = rule_forward(model, x, picks, {"rule": "deconvnet"})
    checked = 0
    for n in picks:
        if isinstance(want[n], torch.Tensor) and want[n].is_floating_point():
            assert_close(got[n], want[n], msg=n)
            checked += 1
    assert checked >= 8
