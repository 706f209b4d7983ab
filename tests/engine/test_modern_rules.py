"""Modern CNNs (issue 19) on the one engine: elementwise nonlinearities, gates, per-image
normalisations, layer scale, permutes, channel shuffle and chunk go back by the rules of
``deconvviz.engine.deconv.reverse``, proved in float64 against the independent reference
``modern_reference`` (autograd on the traced model, every nonlinearity's backward replaced by
the rule, gates and statistics detached) for every rule, at several nodes of the nine networks
of the issue (random weights, 64-96 px); cropped (each seed's cone) = whole-image; receptive
fields equal the support of the gradient; ReLU written as another op gives ReLU's results."""

import copy
import functools

import pytest
import torch
from conftest import assert_close
from graph_reference import one_thread  # noqa: F401
from modern_reference import MODERN_ZOO, RULES, modern_model, modern_reference, modern_size
from torch import nn

from deconvviz.engine.deconv.deconvnet import (
    Plan,
    deconvolve,
    node_outputs,
    plan,
    project_positions,
)
from deconvviz.engine.deconv.record import record_cone
from deconvviz.engine.net.graph import build_graph
from deconvviz.errors import DeconvvizError

pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def _graph(name):
    s = modern_size(name)
    return build_graph(modern_model(name), (s, s))


def _images(size, n=2, seed=0):
    return torch.randn(
        n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _nodes(graph):
    """Up to three projectable (C, H, W) nodes: the middle one of each new kind present
    (gate, norm, nonlinearity), else spread over the depth, and always the deepest map."""
    cands = [
        n
        for n in graph.nodes
        if not n.hidden
        and n.spatial
        and not graph.why_not(n.name)
        and n.op in ("gate", "norm", "nonlinear", "relu", "add", "conv", "cat")
    ]
    picked = []
    for op in ("gate", "norm", "nonlinear"):
        of = [n.name for n in cands if n.op == op]
        if of:
            picked.append(of[len(of) // 2])
    for n in (cands[len(cands) // 3], cands[(2 * len(cands)) // 3]):
        if len(picked) < 2 and n.name not in picked:
            picked.append(n.name)
    deepest = cands[-1].name
    return picked[:2] + ([deepest] if deepest not in picked[:2] else [])


def _strongest(graph, x, node, pos):
    """Per image ``s``, the channel strongest at ``pos[s]`` (a seed that fires)."""
    out = node_outputs(graph, x, [node])[node]
    return [int(out[s, :, y, x_].argmax()) for s, (y, x_) in enumerate(pos.tolist())]


def _plans(graph, node):
    plans = [Plan("whole", "whole")]
    if graph.frames(node) is not None:
        plans.append(Plan("whole", "cone"))
        if graph.whole_image_state(node) is None:
            plans.append(Plan("cone", "cone"))
    return plans


@pytest.mark.parametrize("name", list(MODERN_ZOO))
def test_every_rule_equals_the_modern_reference_at_image_corners(name):
    """Seeds in the image corners (where cones leave the map), every rule, every way the
    engine can go (whole recording and walk, the walk in each seed's cone, the recording
    in the cone where nothing held needs the whole image) = autograd with the rules."""
    model, graph = modern_model(name), _graph(name)
    x = _images(graph.input_size[0])
    nodes = _nodes(graph)
    assert {graph.node(n).op for n in nodes} & {"gate", "norm", "nonlinear", "relu"}
    for node in nodes:
        c, h, w = graph.node(node).shape
        pos = torch.tensor([[0, 0], [h - 1, w - 1]])
        feats = _strongest(graph, x, node, pos)
        want = modern_reference(model, x, {node: feats}, RULES, positions={node: pos})
        for rule in RULES:
            grads, _, act = want[rule][node]
            assert grads.abs().max() > 0, f"{name} {node} {rule}: a seed that sends nothing"
            for how in _plans(graph, node):
                proj, got = project_positions(
                    graph,
                    x,
                    node,
                    torch.tensor([0, 1]),
                    torch.tensor(feats),
                    pos,
                    rule=rule,
                    how=how,
                )
                assert_close(proj, grads, f"{name} {node} {rule} {how}")
                assert_close(got, act, f"{name} {node} activation")


@pytest.mark.parametrize(
    "name",
    ["tv_efficientnet_b0", "tv_convnext_tiny", "timm_mobilenetv3_small_100", "tv_shufflenet_v2"],
)
def test_strongest_activation_and_whole_maps_equal_the_reference(name):
    """deconvolve() as users call it: the paper's seed (the strongest activation, its plan
    chosen by cost) and whole-map seeds."""
    model, graph = modern_model(name), _graph(name)
    x = _images(graph.input_size[0], seed=1)
    node = _nodes(graph)[0]
    feats = [1, graph.node(node).shape[0] // 2]
    for mode in ("max", "map"):
        want = modern_reference(model, x, {node: feats}, RULES, mode=mode)
        for rule in RULES:
            p = deconvolve(model, x, node, feats, [0, 1], mode=mode, rule=rule, graph=graph)
            assert_close(p.projections, want[rule][node][0], f"{name} {node} {mode} {rule}")
            if mode == "max":
                assert p.position.tolist() == want[rule][node][1].tolist()


def _support_box(grad):
    """``(y0, x0, y1, x1)`` of the pixels where ``grad`` ``(C, H, W)`` is not zero."""
    rows = torch.nonzero(grad.abs().sum(0).sum(1)).flatten()
    cols = torch.nonzero(grad.abs().sum(0).sum(0)).flatten()
    return (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


@pytest.mark.parametrize(
    "name,exact",
    [
        ("tv_efficientnet_b0", True),
        ("tv_convnext_tiny", True),
        ("timm_convnext_atto", True),
        ("timm_efficientnet_b0", True),
        ("tv_mobilenet_v3_large", False),
        ("tv_regnet_y_400mf", False),
    ],
)
def test_receptive_fields_are_the_support_of_the_gradient(name, exact):
    """A position's receptive field (what ``layers`` prints, what a report cuts) is where the
    gradient of that position reaches the image, gates and statistics held: a gate's global
    average or a norm's statistics do not widen it, and permutes into channels-last blocks
    and back keep it. With SiLU and GELU (slopes nowhere zero) the support fills the field
    exactly; ReLU's and Hardswish's zero slopes may leave holes at its edge, never more."""
    model, graph = modern_model(name), _graph(name)
    x = _images(graph.input_size[0], n=1, seed=2)
    for node in _nodes(graph)[:2]:
        info = graph.info(node)
        h, w = info.output_size
        pos = torch.tensor([[h // 2, w // 3]])
        feats = _strongest(graph, x, node, pos)
        want = modern_reference(model, x, {node: feats}, "gradient", positions={node: pos})
        y0, x0, y1, x1 = _support_box(want[node][0][0])
        b0, c0, b1, c1 = info.box((h // 2, w // 3))
        assert b0 <= y0 < y1 <= b1 and c0 <= x0 < x1 <= c1, f"{name} {node}"
        if exact:
            assert (y0, x0, y1, x1) == (b0, c0, b1, c1), f"{name} {node}"


@pytest.mark.parametrize("name", ["tv_efficientnet_b0", "tv_convnext_tiny", "timm_resnet50"])
def test_held_values_make_the_recording_whole_image(name):
    """A gate's value and a norm's statistics depend on the whole image: a seed above one is
    recorded over whole images (its reverse pass still in its cone), and a cone recording
    of it is refused in one line naming the node; a ReLU network keeps cone recordings."""
    graph = _graph(name)
    node = _nodes(graph)[-1]
    held = graph.whole_image_state(node)
    chosen = plan(graph, node, "position", 1, 10**6)
    if name == "timm_resnet50":
        assert held is None
        assert (
            chosen == Plan("cone", "cone") or graph.frames(node) is None or chosen.record == "whole"
        )
        return
    assert held is not None and held.op in ("gate", "norm")
    assert chosen.record == "whole"
    x = _images(graph.input_size[0], n=1)
    if graph.frames(node) is not None:
        with pytest.raises(
            DeconvvizError,
            match=rf"^node '{node}' cannot be recorded inside "
            rf"its cone \(node '{held.name}' \({held.what}\) holds a value of "
            r"the whole image\); record whole images$",
        ):
            record_cone(graph, x, node, torch.tensor([0]), torch.tensor([[0, 0]]))


class _Net(nn.Module):
    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.act, self.conv2 = nn.Conv2d(3, 6, 3), act, nn.Conv2d(6, 5, 3, padding=1)
        self.act2 = copy.deepcopy(act)

    def forward(self, x):
        return self.act2(self.conv2(self.act(self.conv1(x))))


def test_relu_written_as_another_nonlinearity_gives_relu_results():
    """LeakyReLU(0) and Hardtanh(0, inf) are ReLU: through the general rule (their slope
    recorded as 0.0/1.0) every rule gives the ReLU rule's numbers (products with 0 and 1 are
    exact)."""
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    relu = _Net(nn.ReLU()).eval()
    for act in (nn.LeakyReLU(0.0), nn.Hardtanh(0.0, float("inf"))):
        other = _Net(act).eval()
        other.load_state_dict(relu.state_dict())
        for rule in RULES:
            for mode in ("max", "map"):
                a = deconvolve(relu, x, "act2", [0, 2, 4], mode=mode, rule=rule)
                b = deconvolve(other, x, "act2", [0, 2, 4], mode=mode, rule=rule)
                assert torch.equal(a.projections, b.projections), (act, rule, mode)


class _SelfGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(y)


def test_a_signal_times_its_own_sigmoid_is_refused_in_one_line():
    """SiLU written out is not a gate (the gate would be the signal itself): refused, as the
    reference refuses it, naming the node and the op."""
    with pytest.raises(
        DeconvvizError,
        match=r"^node 'mul' \(operator\.mul\), a signal times "
        r"its own sigmoid \(SiLU written out; use nn\.SiLU or F\.silu\), has no "
        r"deconvnet rule \(rules exist for: ",
    ):
        deconvolve(_SelfGate().eval(), torch.randn(1, 3, 8, 8), "mul", 0)
