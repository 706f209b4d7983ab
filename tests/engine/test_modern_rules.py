"""Modern CNNs (issue 19) on the one engine: elementwise nonlinearities, gates, per-image
normalisations, layer scale, permutes, channel shuffle and chunk go back by the rules of
``deconvviz.engine.deconv.transposes``, proved in float64 against the independent reference
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

from deconvviz.engine.deconv import record
from deconvviz.engine.deconv.cone import record_cone, whole_part
from deconvviz.engine.deconv.deconvnet import deconvolve, node_outputs
from deconvviz.engine.deconv.plan import Plan, plan
from deconvviz.engine.deconv.projecting import project_positions
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
    frames = graph.frames(node)
    if frames is not None:
        plans.append(Plan("whole", "cone"))
        cone = frames[graph.nodes[0].name].n
        if all(n <= 2 * s for n, s in zip(cone, graph.input_size)):
            # (a deep node's cone, many times the image, records far slower than the image)
            plans.append(Plan("cone", "cone"))
    return plans


@pytest.mark.parametrize("name", list(MODERN_ZOO))
def test_every_rule_equals_the_modern_reference_at_image_corners(name):
    """Seeds in the image corners (where cones leave the map), every rule, every way the
    engine can go (whole recording and walk, the walk in each seed's cone, the recording
    in the cone, with what holds a value of the whole image from a whole pass) = autograd
    with the rules."""
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


@pytest.mark.parametrize(
    "name,node,held",
    [
        ("tv_efficientnet_b0", "features.2.0.block.1", "features.1.0.block.1"),
        ("tv_efficientnet_b0", "features.3.0.block.2", "features.3.0.block.2"),
        ("timm_efficientnet_b0", "blocks.1.0.bn1.act", "blocks.0.0.se.mul"),
        ("tv_convnext_tiny", "features.1.1.add", None),
        ("timm_convnext_atto", "stages.0.blocks.1.add", None),
    ],
)
def test_cone_recordings_take_held_values_from_one_whole_pass(name, node, held):
    """A gate's value needs its whole input (the squeeze's global average): the gate and
    every node below it run over whole images, once per image, the rest inside each seed's
    cone. ConvNeXt's LayerNorms normalise each position's channels, so its cone recordings
    need no whole pass. Seeds in all four corners (where the cones leave the map) and the
    middle, the cone-recorded projections = the whole-image ones = the reference, every
    rule; the plan records cones for several seeds on one image."""
    model, graph = modern_model(name), _graph(name)
    lower = [n.name for n in whole_part(graph, node)]
    if held is None:
        assert lower == []
        assert not any(graph.holds_whole_image(n.name) for n in graph.ancestors([node]))
        assert any(graph.node(n.name).op == "norm" for n in graph.ancestors([node]))
    else:
        assert any(graph.holds_whole_image(n.name) for n in graph.ancestors([node]))
        assert held in lower and graph.node(held).op == "gate"
        assert node == held or node not in lower
    if node not in lower:  # else the cone recording is a whole one, cut
        assert plan(graph, node, "position", 4, 1) == Plan("cone", "cone")
    x = _images(graph.input_size[0], n=2, seed=3)
    c, h, w = graph.node(node).shape
    pos = torch.tensor([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1], [h // 2, w // 2]])
    idx = torch.tensor([0, 1, 1, 0, 1])
    out = node_outputs(graph, x, [node])[node]
    feats = [int(out[i, :, y, x_].argmax()) for i, (y, x_) in zip(idx.tolist(), pos.tolist())]
    want = modern_reference(model, x[idx], {node: feats}, RULES, positions={node: pos})
    for rule in RULES:
        got = {}
        for how in (Plan("cone", "cone"), Plan("whole", "cone"), Plan("whole", "whole")):
            got[how], act = project_positions(
                graph, x, node, idx, torch.tensor(feats), pos, rule=rule, how=how
            )
            assert_close(got[how], want[rule][node][0], f"{name} {node} {rule} {how}")
            assert_close(act, want[rule][node][2], f"{name} {node} activation")
        assert_close(got[Plan("cone", "cone")], got[Plan("whole", "whole")], f"{name} {rule}")
    # The whole passes one image at a time (a budget of 1 byte) keep the same windows.
    one = record_cone(graph, x, node, idx, pos, masks=True, max_bytes=1)
    rec = record_cone(graph, x, node, idx, pos, masks=True)
    for kind in ("outputs", "held", "masks", "switches"):
        a, b = getattr(one, kind), getattr(rec, kind)
        assert a.keys() == b.keys()
        for key in a:
            if a[key].is_floating_point():
                assert_close(a[key], b[key], f"{name} {kind} {key}")
            else:  # ReLU's mask, switches: the same comparisons on the same float64 values
                assert torch.equal(a[key], b[key]), f"{name} {kind} {key}"


def test_whole_recordings_in_passes_of_few_images_with_norms_folded_equal_the_reference(
    monkeypatch,
):
    """A whole recording runs its images in passes whose widest map stays under
    ``SIGNAL_BYTES`` (here one image per pass), every batch norm folded into the conv
    before it: each plan, every rule = the reference. The folded weights are made per
    recording: after the model's statistics and weights change, the projections follow."""
    monkeypatch.setattr(record, "SIGNAL_BYTES", 1)
    model = copy.deepcopy(modern_model("tv_efficientnet_b0"))
    graph = build_graph(model, (64, 64))
    x = _images(64, n=3, seed=5)
    idx = torch.tensor([0, 2, 1, 2])
    for step in ("as trained", "changed"):
        if step == "changed":
            with torch.no_grad():
                model.features[0][1].running_var.mul_(3.0)
                model.features[1][0].block[0][1].running_mean.add_(0.5)
                model.features[2][0].block[0][0].weight.mul_(-1.0)
        for node in ("features.2.0.block.1", "features.3.0.block.2"):
            c, h, w = graph.node(node).shape
            pos = torch.tensor([[0, 0], [h - 1, w - 1], [h // 2, 1], [1, w // 2]])
            out = node_outputs(graph, x, [node])[node]
            feats = [int(out[i, :, r, q].argmax()) for i, (r, q) in zip(idx.tolist(), pos.tolist())]
            want = modern_reference(model, x[idx], {node: feats}, RULES, positions={node: pos})
            for rule in RULES:
                for how in (Plan("whole", "whole"), Plan("whole", "cone"), Plan("cone", "cone")):
                    got, act = project_positions(
                        graph, x, node, idx, torch.tensor(feats), pos, rule=rule, how=how
                    )
                    assert_close(got, want[rule][node][0], f"{step} {node} {rule} {how}")
                    assert_close(act, want[rule][node][2], f"{step} {node} activation")


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


@pytest.mark.parametrize(
    "node", ["stage2.1.branch2.7", "stage2.3.cat", "stage3.3.cat", "stage4.2.branch2.2"]
)
def test_shufflenet_seeds_past_channel_shuffles_take_their_cones(node):
    """ShuffleNet-V2's channel shuffle (``view(B, 2, C/2, H, W)``, ``transpose(1, 2)``,
    ``view(B, C, H, W)``) and its ``chunk(2, dim=1)`` regroup channels and keep each
    position in its place: a seed past them has a cone through every one of them, records
    inside it (a shallow seed records a window smaller than the image) and walks back in
    it. Seeds in all four corners and the middle: every plan, every rule = the autograd
    reference; the cone recording keeps the whole recording's values in each window."""
    model, graph = modern_model("tv_shufflenet_v2"), _graph("tv_shufflenet_v2")
    frames = graph.frames(node)
    assert frames is not None
    shuffles = [n for n in graph.ancestors([node]) if n.op in ("reshape", "permute", "narrow")]
    assert len(shuffles) >= 4 and all(not frames[n.name].whole for n in shuffles)
    assert any(len(n.shape) == 4 for n in shuffles)  # the (2, C/2, H, W) view has its frame
    x = _images(graph.input_size[0], n=2, seed=6)
    c, h, w = graph.node(node).shape
    pos = torch.tensor([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1], [h // 2, w // 2]])
    idx = torch.tensor([0, 1, 0, 1, 1])
    assert plan(graph, node, "position", 5, 2).walk == "cone"
    if node.startswith("stage2"):
        assert all(n < s for n, s in zip(frames["x"].n, graph.input_size))
    if node == "stage2.1.branch2.7":  # its cone costs less than the image
        assert plan(graph, node, "position", 5, 2) == Plan("cone", "cone")
    out = node_outputs(graph, x, [node])[node]
    feats = [int(out[i, :, y, x_].argmax()) for i, (y, x_) in zip(idx.tolist(), pos.tolist())]
    want = modern_reference(model, x[idx], {node: feats}, RULES, positions={node: pos})
    for rule in RULES:
        grads, _, act = want[rule][node]
        assert grads.abs().max() > 0
        for how in (Plan("cone", "cone"), Plan("whole", "cone"), Plan("whole", "whole")):
            got, got_act = project_positions(
                graph, x, node, idx, torch.tensor(feats), pos, rule=rule, how=how
            )
            assert_close(got, grads, f"{node} {rule} {how}")
            assert_close(got_act, act, f"{node} activation")
    whole = record.record_whole(graph, x, [node], masks=True)
    cone = record_cone(graph, x, node, idx, pos, masks=True)
    checked = 0
    for kind in ("masks", "switches"):
        for name, kept in getattr(cone, kind).items():
            full, origin = getattr(whole, kind)[name], cone.origin(name)
            assert tuple(kept.shape[-2:]) == frames[name].n
            (fh, fw), (H, W) = frames[name].n, full.shape[-2:]
            for s in range(idx.numel()):
                oy, ox = int(origin[s, 0]), int(origin[s, 1])
                y0, x0, y1, x1 = max(oy, 0), max(ox, 0), min(oy + fh, H), min(ox + fw, W)
                got = kept[s, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
                assert torch.equal(got, full[idx[s], :, y0:y1, x0:x1]), name
                checked += 1
    assert checked > 0
    at = whole.outputs[node][idx, :, pos[:, 0], pos[:, 1]]
    assert_close(cone.outputs[node][:, :, 0, 0], at, node)
