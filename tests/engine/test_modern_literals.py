"""The modern ops' rules on tiny hand-set networks, against numbers written out by hand.

Each network has one or two channels and maps of a few pixels, weights set by hand, so the
deconvnet's projection is a short sum; the expected numbers are worked out in each test's
docstring (sigmoid(1) = 0.7310585786300049, sigmoid(-1) = 0.2689414213699951, from
``1 / (1 + exp(-t))``). Every way the engine goes (whole recording and walk, the walk in
each seed's cone, the recording in the cone, with what holds a value of the whole image
from a whole pass) must give them, for every rule.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import assert_close
from torch import nn

from deconvviz.engine.deconv.cone import whole_part
from deconvviz.engine.deconv.plan import Plan
from deconvviz.engine.deconv.projecting import project_positions
from deconvviz.engine.net.graph import build_graph

RULES = ("deconvnet", "guided", "gradient")
PLANS = (Plan("whole", "whole"), Plan("whole", "cone"), Plan("cone", "cone"))
S1, S_1 = 0.7310585786300049, 0.2689414213699951  # sigmoid(1), sigmoid(-1)


def _conv(c_in, c_out, weight, k=1):
    conv = nn.Conv2d(c_in, c_out, k, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight, dtype=torch.float64).view(c_out, c_in, k, k))
    return conv


def _f64(values):
    return torch.tensor(values, dtype=torch.float64)


def _projections(model, x, node, feats, pos, rule, how):
    graph = build_graph(model.double().eval(), tuple(x.shape[-2:]), in_channels=x.shape[1])
    idx = torch.zeros(len(feats), dtype=torch.int64)
    return project_positions(
        graph, x, node, idx, torch.tensor(feats), torch.tensor(pos), rule=rule, how=how
    )


# ----------------------------------------------------------------------------- SiLU


def test_silu_goes_back_by_each_rule():
    """conv 2x2 (weights [[1, -1], [2, 0]]) then SiLU on a 3x3 image: y(0,0) = 1 and
    y(0,1) = -2. Seed (0,0): v = silu(1) = sigmoid(1) = 0.7310585786300049 and silu'(1) =
    sigmoid(1) * (2 - sigmoid(1)) = 0.9276705118714869; deconvnet sends relu(v) = v, guided
    relu(v) * relu(silu'(1)) = 0.6781814858457382, gradient v * silu'(1), the same. Seed
    (0,1): v = silu(-2) = -0.2384058440442351 and silu'(-2) = sigmoid(-2) * (1 - 2 *
    sigmoid(2)) = -0.09078424878489547; deconvnet and guided send relu(v) = 0, gradient
    v * silu'(-2) = 0.021643495457484827. The conv stamps its weights times what arrives
    (rows 0-1, columns 0-1 for seed (0,0); columns 1-2 for seed (0,1))."""
    model = nn.Sequential(_conv(1, 1, [1.0, -1.0, 2.0, 0.0], k=2), nn.SiLU())
    x = torch.tensor([[[[1.0, 0.0, 2.0], [0.0, 0.0, -1.0], [3.0, 1.0, 0.0]]]], dtype=torch.float64)
    sent = {
        "deconvnet": (0.7310585786300049, 0.0),
        "guided": (0.6781814858457382, 0.0),
        "gradient": (0.6781814858457382, 0.021643495457484827),
    }
    stamp = torch.tensor([[1.0, -1.0], [2.0, 0.0]], dtype=torch.float64)
    for rule in RULES:
        want = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
        want[0, 0, 0:2, 0:2] = sent[rule][0] * stamp
        want[1, 0, 0:2, 1:3] = sent[rule][1] * stamp
        for how in PLANS:
            proj, act = _projections(model, x, "1", [0, 0], [[0, 0], [0, 1]], rule, how)
            assert_close(proj, want, f"{rule} {how}")
            assert_close(act, _f64([0.7310585786300049, -0.2384058440442351]), "act")


# ----------------------------------------------------------------------------- gates


class _FunctionalGate(nn.Module):
    """Squeeze-and-excitation written out as timm writes it: ``x * sigmoid(...)``."""

    def __init__(self, se: torchvision.ops.SqueezeExcitation):
        super().__init__()
        self.fc1, self.fc2 = se.fc1, se.fc2

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


def _gated(functional: bool) -> nn.Sequential:
    se = torchvision.ops.SqueezeExcitation(2, 1)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
        se.fc2.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        se.fc1.bias.zero_()
        se.fc2.bias.zero_()
    gate = _FunctionalGate(se) if functional else se
    return nn.Sequential(_conv(2, 2, [1.0, 0.0, 0.0, 1.0]), gate, _conv(2, 1, [1.0] * 18, k=3))


@pytest.mark.parametrize("functional", [False, True])
def test_a_gate_is_held_at_its_value_of_the_whole_image(functional):
    """identity 1x1 conv, squeeze-and-excitation (mean -> 1x1 conv [1, 1] -> ReLU -> 1x1
    conv [1, -1] -> sigmoid), then a 3x3 conv of ones, on a 2x5x5 image: channel 0 all
    ones (mean 1), channel 1 ``(i - 2) * (j + 1)`` (mean 0), so the gate is
    (sigmoid(1), sigmoid(-1)) whatever window a seed sees. Seed (0,0): v = 9 sigmoid(1) +
    sigmoid(-1) * (-3 * 6) = 1.7385816230101323; seed (2,2): v = 9 sigmoid(1) + sigmoid(-1) *
    (3 * 12) = 16.26141837698987. Each goes back through the gated input only, times the
    gate: v * sigmoid(1) on channel 0 and v * sigmoid(-1) on channel 1 of its 3x3 window,
    for every rule (no nonlinearity on the way). The gate's value needs the whole image,
    which the cone recording takes from one whole pass."""
    model = _gated(functional)
    i = torch.arange(5, dtype=torch.float64)
    x = torch.stack([torch.ones(5, 5, dtype=torch.float64), (i - 2)[:, None] * (i + 1)[None, :]])
    x = x.unsqueeze(0)
    graph = build_graph(model.double().eval(), (5, 5))
    assert [n.op for n in whole_part(graph, "2")][-1] == "gate"
    want = torch.zeros(2, 2, 5, 5, dtype=torch.float64)
    want[0, 0, 0:3, 0:3], want[0, 1, 0:3, 0:3] = 1.2710050101500343, 0.467576612860098
    want[1, 0, 2:5, 2:5], want[1, 1, 2:5, 2:5] = 11.888049405190054, 4.373368971799814
    for rule in RULES:
        for how in PLANS:
            proj, act = _projections(model, x, "2", [0, 0], [[0, 0], [2, 2]], rule, how)
            assert_close(proj, want, f"{rule} {how}")
            assert_close(act, _f64([1.7385816230101323, 16.26141837698987]), "act")


# ----------------------------------------------------------------------------- norms


class _ChannelsLastNorm(nn.Module):
    """ConvNeXt's LayerNorm: over the channels of a channels-last ``(H, W, C)`` map."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _normed(kind: str) -> nn.Sequential:
    if kind == "group":
        norm = nn.GroupNorm(1, 2, eps=0.0)
    else:
        norm = torchvision.models.convnext.LayerNorm2d(2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0]))
    if kind == "channels_last":
        layer = nn.LayerNorm(2, eps=0.0)
        layer.load_state_dict(norm.state_dict())
        norm = _ChannelsLastNorm(layer)
    return nn.Sequential(_conv(1, 2, [1.0, -1.0]), norm, _conv(2, 1, [1.0] * 8, k=2))


@pytest.mark.parametrize("kind", ["layer2d", "channels_last"])
def test_a_layer_norm_over_channels_holds_each_positions_statistics(kind):
    """1x1 conv to (x, -x), LayerNorm over those 2 channels (weight (2, 1), bias (0.5, 0),
    eps 0), 2x2 conv of ones, on a 3x3 image. At each position the mean is 0 and the
    variance x^2, so the norm is (2 sign(x) + 0.5, -sign(x)) and, its statistics held, goes
    back as (2 / |x|, 1 / |x|); the 1x1 conv's transpose sends 2/|x| - (-1)(-1)/|x| = 1/|x|
    per unit of signal. Both seeds have v = sum over their 2x2 window of (sign(x) + 0.5) =
    2, so the projections are 2 / |x| on the window: [[1, 2], [1, 0.5]] for seed (0,0),
    [[0.5, 2], [2, 2/3]] for seed (1,1). Each position's statistics are its own, so a cone
    recording needs no whole pass (torchvision's LayerNorm2d and ConvNeXt's LayerNorm on a
    channels-last map alike)."""
    model = _normed(kind)
    x = torch.tensor([[[[2.0, -1.0, 1.0], [-2.0, 4.0, 1.0], [1.0, -1.0, -3.0]]]])
    x = x.double()
    graph = build_graph(model.double().eval(), (3, 3))
    assert whole_part(graph, "2") == []
    want = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    want[0, 0, 0:2, 0:2] = _f64([[1.0, 2.0], [1.0, 0.5]])
    want[1, 0, 1:3, 1:3] = _f64([[0.5, 2.0], [2.0, 2.0 / 3.0]])
    for rule in RULES:
        for how in PLANS:
            proj, act = _projections(model, x, "2", [0, 0], [[0, 0], [1, 1]], rule, how)
            assert_close(proj, want, f"{kind} {rule} {how}")
            assert_close(act, _f64([2.0, 2.0]), "act")


def test_a_group_norm_holds_the_statistics_of_the_whole_image():
    """1x1 conv to (x, -x), GroupNorm with one group over both channels (weight (2, 1),
    bias (0.5, 0), eps 0), 2x2 conv of ones, on a 3x3 image of +-2: the image's mean is 0
    and its variance 4, so the norm is (x + 0.5, -x / 2) and goes back as (2 / 2, 1 / 2);
    the 1x1 conv's transpose sends 1 - 0.5 = 0.5 per unit of signal. Seed (0,0) sees
    (2, -2, 2, 2): v = sum(x / 2 + 0.5) = 4, projection 2 on its window; seed (1,1) sees
    (2, -2, 2, -2): v = 2, projection 1. The statistics are the whole image's: the cone
    recording takes the norm (and what is below it) from a whole pass."""
    model = _normed("group")
    x = torch.tensor([[[[2.0, -2.0, 2.0], [2.0, 2.0, -2.0], [-2.0, 2.0, -2.0]]]]).double()
    graph = build_graph(model.double().eval(), (3, 3))
    assert [n.op for n in whole_part(graph, "2")] == ["input", "conv", "norm"]
    want = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    want[0, 0, 0:2, 0:2] = 2.0
    want[1, 0, 1:3, 1:3] = 1.0
    for rule in RULES:
        for how in PLANS:
            proj, act = _projections(model, x, "2", [0, 0], [[0, 0], [1, 1]], rule, how)
            assert_close(proj, want, f"{rule} {how}")
            assert_close(act, _f64([4.0, 2.0]), "act")
