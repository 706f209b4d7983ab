"""Each seed's cone on any graph: the forward pass recorded inside it and the reverse walk
inside it give the projections of the whole-image pass, for every rule, on every family
(through adds, concatenations, strides, dilation, padding, groups, every pool kind, batch norm
and average pools cut to the window), at seeds in the image corners; float64 against the
independent autograd reference; hand-set graphs with literal values."""

import pytest
import torch
from conftest import alexnet_like, assert_close
from graph_reference import ZOO, one_thread, reference, zoo_graph, zoo_model  # noqa: F401
from torch import nn

from deconvviz.engine.deconv import record
from deconvviz.engine.deconv.cone import record_cone
from deconvviz.engine.deconv.deconvnet import RULES, deconvolve
from deconvviz.engine.deconv.plan import Plan, block_macs, macs, share_cones
from deconvviz.engine.deconv.projecting import project_positions, project_recorded
from deconvviz.engine.deconv.record import record_whole
from deconvviz.engine.deconv.windows import fill_outside
from deconvviz.engine.net.graph import build_graph

PLANS = [Plan("whole", "whole"), Plan("whole", "cone"), Plan("cone", "cone")]


def _images(size, n=2, seed=0, dtype=torch.float64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _cone_nodes(graph, count=3):
    """Visible nodes with a cone spread over the depth, of the kinds a cone passes."""
    nodes = [
        n.name
        for n in graph.nodes
        if not n.hidden
        and graph.frames(n.name) is not None
        and n.op in ("relu", "relu6", "add", "cat", "maxpool", "avgpool", "conv", "batchnorm")
    ]
    assert nodes, "no node with a cone"
    step = max(1, len(nodes) // count)
    return nodes[step // 2 :: step][:count]


def _corners(graph, node):
    h, w = graph.node(node).shape[1:]
    return torch.tensor([[0, 0], [h - 1, w - 1]])


@pytest.mark.parametrize("name", list(ZOO))
def test_every_plan_equals_autograd_for_every_rule_at_image_corners(name):
    model, graph = zoo_model(name), zoo_graph(name)
    x = _images(graph.input_size[0])
    for node in _cone_nodes(graph, count=2):
        c = graph.node(node).shape[0]
        feats = [c // 3, c - 1]
        pos = _corners(graph, node)
        want = reference(model, x, {node: feats}, RULES, positions={node: pos})
        for rule in RULES:
            grads = want[rule][node][0]
            for how in PLANS:
                proj, act = project_positions(
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
                assert_close(act, want[rule][node][2], f"{name} {node} activation")


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "bottleneck", "mobilenet_v2"])
def test_a_walk_over_whole_recordings_keeps_whole_maps_where_the_cone_outgrows_them(name):
    """The deepest nodes' cones outgrow the maps below them: a walk over a whole recording
    keeps those maps whole (and everything below) and adds each seed's window into them at
    that seed's own place. Less work than the cone's windows and than the whole maps, and
    autograd's projection for every rule, at the corners and the middle, in float64."""
    model, graph = zoo_model(name), zoo_graph(name)
    node = [
        n.name
        for n in graph.nodes
        if not n.hidden and graph.frames(n.name) is not None and n.op in ("relu", "relu6", "add")
    ][-1]
    frames = graph.frames(node, hybrid=True)
    assert sum(not f.whole for f in frames.values()) >= 2
    assert any(f.whole for f in frames.values())
    hybrid = macs(graph, frames)
    assert hybrid < macs(graph, graph.frames(node))
    assert hybrid < macs(graph, graph.frames(node, whole=True))
    c, h, w = graph.node(node).shape
    pos = torch.tensor([[0, 0], [h - 1, w - 1], [h // 2, w // 2]])
    feats = [0, c // 2, c - 1]
    x = _images(graph.input_size[0], n=3, seed=13)
    want = reference(model, x, {node: feats}, RULES, positions={node: pos})
    for rule in RULES:
        proj, act = project_positions(
            graph, x, node, torch.arange(3), torch.tensor(feats), pos, rule=rule, how=PLANS[1]
        )
        assert_close(proj, want[rule][node][0], f"{name} {node} {rule}")
        assert_close(act, want[rule][node][2], f"{name} {node} activation")


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "densenet121", "mobilenet_v2"])
def test_cone_recording_equals_the_whole_recording_inside_each_cone(name):
    """Every switch, mask and output a cone recording keeps is the whole recording's value
    at that place (where the window lies inside the map)."""
    graph = zoo_graph(name)
    x = _images(graph.input_size[0], n=2, seed=3)
    node = _cone_nodes(graph)[1]
    h, w = graph.node(node).shape[1:]
    idx, pos = torch.tensor([1, 0, 1]), torch.tensor([[0, w - 1], [h // 2, w // 2], [h - 1, 0]])
    whole = record_whole(graph, x, [node], masks=True)
    cone = record_cone(graph, x, node, idx, pos, masks=True)
    frames = graph.frames(node)
    checked = 0
    for records, full in ((cone.switches, whole.switches), (cone.masks, whole.masks)):
        for name_, kept in records.items():
            origin = cone.origin(name_)
            fh, fw = frames[name_].n
            H, W = full[name_].shape[-2:]
            for s in range(idx.numel()):
                oy, ox = int(origin[s, 0]), int(origin[s, 1])
                y0, x0, y1, x1 = max(oy, 0), max(ox, 0), min(oy + fh, H), min(ox + fw, W)
                got = kept[s, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
                assert torch.equal(got, full[name_][idx[s], :, y0:y1, x0:x1]), name_
                checked += 1
    assert checked > 0
    out = whole.outputs[node][idx, :, pos[:, 0], pos[:, 1]]
    assert_close(cone.outputs[node][:, :, 0, 0], out)


def test_cone_recording_matches_in_float32():
    graph = zoo_graph("resnet18")
    x = _images(64, seed=5)
    node = "layer1.1.relu_1"
    pos = torch.tensor([[3, 9], [15, 0]])
    got = [
        project_positions(
            graph, x, node, torch.tensor([0, 1]), torch.tensor([4, 40]), pos, rule="guided", how=how
        )[0]
        for how in PLANS
    ]
    for p in got[1:]:
        assert_close(p, got[0])
    # The same network in float32: the windows agree to float32 rounding.
    m32 = zoo_model("resnet18")
    g32 = build_graph(m32.float(), (64, 64))
    try:
        x32 = x.float()
        f32 = [
            project_positions(
                g32,
                x32,
                node,
                torch.tensor([0, 1]),
                torch.tensor([4, 40]),
                pos,
                rule="guided",
                how=how,
            )[0]
            for how in PLANS
        ]
        for p in f32[1:]:
            assert_close(p, f32[0])
    finally:
        m32.double()


def test_windows_are_the_whole_projection_cut_to_each_receptive_field():
    graph = zoo_graph("densenet121")
    x = _images(64, seed=6)
    node = _cone_nodes(graph)[0]
    info = graph.info(node)
    pos = _corners(graph, node)
    full, _ = project_positions(
        graph, x, node, torch.tensor([0, 1]), torch.tensor([0, 1]), pos, how=Plan("whole", "whole")
    )
    for how in PLANS:
        win, _ = project_positions(
            graph, x, node, torch.tensor([0, 1]), torch.tensor([0, 1]), pos, windows=True, how=how
        )
        assert win.shape[-2:] == tuple(info.rf_size)
        for s in range(2):
            y0, x0, y1, x1 = info.box(tuple(pos[s].tolist()))
            oy = info.rf_start[0] + int(pos[s, 0]) * info.rf_jump[0]
            ox = info.rf_start[1] + int(pos[s, 1]) * info.rf_jump[1]
            inside = win[s, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            assert_close(inside, full[s, :, y0:y1, x0:x1])
            assert float(inside.abs().sum()) == pytest.approx(float(win[s].abs().sum()))
            assert float(full[s].abs().sum()) == pytest.approx(float(inside.abs().sum()))


def test_chunks_of_one_seed_agree_with_one_batch():
    graph = zoo_graph("bottleneck")
    x = _images(64, n=3, seed=7)
    node = _cone_nodes(graph)[1]
    h, w = graph.node(node).shape[1:]
    idx = torch.tensor([0, 2, 1, 2, 0])
    feat = torch.tensor([1, 7, 3, 0, 5])
    pos = torch.tensor([[0, 0], [h - 1, w - 1], [h // 2, 1], [1, w // 2], [h - 1, 0]])
    for how in PLANS[1:]:
        for windows in (False, True):  # chunks land in their rows of one result, whole or cut
            one, a1 = project_positions(
                graph, x, node, idx, feat, pos, rule="gradient", how=how, windows=windows
            )
            many, a2 = project_positions(
                graph,
                x,
                node,
                idx,
                feat,
                pos,
                rule="gradient",
                how=how,
                max_bytes=1,
                windows=windows,
            )
            assert_close(many, one)
            assert_close(a2, a1)


@pytest.mark.parametrize("cap", [1, 200_000, 1_000_000])
def test_a_walk_goes_on_in_groups_of_seeds_where_its_signals_grow(cap, monkeypatch):
    """Past ``SIGNAL_BYTES`` (per group of seeds) a reverse pass splits its seeds into groups
    and goes on with each: from the start (1 byte), or partway down (the signals of 5 seeds
    outgrow 200 kB or 1 MB on the way to the 64x64 image); the same projections, every plan."""
    graph = zoo_graph("bottleneck")
    x = _images(64, n=3, seed=7)
    node = _cone_nodes(graph)[-1]
    h, w = graph.node(node).shape[1:]
    idx = torch.tensor([0, 2, 1, 2, 0])
    feat = torch.tensor([1, 7, 3, 0, 5])
    pos = torch.tensor([[0, 0], [h - 1, w - 1], [h // 2, 1], [1, w // 2], [h - 1, 0]])
    whole = {how: project_positions(graph, x, node, idx, feat, pos, how=how) for how in PLANS}
    monkeypatch.setattr(record, "SIGNAL_BYTES", cap)
    for how in PLANS:
        proj, act = project_positions(graph, x, node, idx, feat, pos, how=how)
        assert_close(proj, whole[how][0], f"{how} {cap}")
        assert_close(act, whole[how][1])


@pytest.mark.parametrize("name", ["vgg11", "resnet18", "googlenet"])
def test_seeds_of_one_image_share_a_recording_and_equal_autograd(name):
    """Seeds of one image at neighbouring positions (one position twice) record the union
    of their cones once, a block of positions; each projection still equals autograd's."""
    model, graph = zoo_model(name), zoo_graph(name)
    x = _images(graph.input_size[0], n=2, seed=11)
    node = _cone_nodes(graph)[1]
    c, h, w = graph.node(node).shape
    idx = torch.tensor([0, 0, 0, 1, 0, 1])
    pos = torch.tensor([[1, 1], [1, 2], [2, 1], [h - 1, w - 1], [1, 1], [h - 1, w - 2]])
    feat = torch.tensor([0, c - 1, c // 2, 1, 2, 3])
    groups = share_cones(graph, node, idx, pos)
    assert sorted(s for g in groups for s in g[3]) == list(range(6))
    shared = [g for g in groups if len(g[3]) > 1]
    assert shared and all(len({int(idx[s]) for s in g[3]}) == 1 for g in shared)
    assert any(g[0] != (1, 1) for g in shared), "neighbours share a block of positions"
    want = reference(model, x[idx], {node: feat.tolist()}, RULES, positions={node: pos})
    for rule in RULES:
        proj, act = project_positions(
            graph, x, node, idx, feat, pos, rule=rule, how=Plan("cone", "cone")
        )
        assert_close(proj, want[rule][node][0], f"{name} {node} {rule}")
        assert_close(act, want[rule][node][2], f"{name} {node} activation")


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "densenet121"])
def test_a_block_costs_what_its_frames_cost(name):
    """The closed form of a block's multiply-adds equals the sum over its frames."""
    graph = zoo_graph(name)
    for node in _cone_nodes(graph):
        a, b, c, d = block_macs(graph, node)
        for bh, bw in ((1, 1), (2, 3), (4, 1), (3, 5)):
            frames = graph.frames(node, block=(bh, bw))
            want = macs(graph, frames)
            assert a + b * (bh - 1) + c * (bw - 1) + d * (bh - 1) * (bw - 1) == want


# ----------------------------------------------------------------------------- hand-set graphs


class _Pools(nn.Module):
    """One channel: a 3x3 avg pool (stride 2, padding 1, count_include_pad=False), a 2x2
    ceil-mode max pool and an add of the two paths' 1x1 conv outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.avg = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)
        self.max = nn.MaxPool2d(2, 2, ceil_mode=True)
        with torch.no_grad():
            self.conv.weight.fill_(2.0)

    def forward(self, x):
        return torch.relu(self.avg(x) + self.max(self.conv(x)))


def test_hand_set_graph_forward_and_projection_are_literal():
    model = _Pools().double().eval()
    x = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5)
    graph = build_graph(model, (5, 5))
    node = "relu"
    # avg: windows of rows/cols {0,1}, {1,2,3}, {3,4}; means of x = 5 r + c.
    # max(2x): windows {0,1}, {2,3}, {4}: 2 * (5 * 1 + 1) = 12 at (0, 0), ...
    # relu(out)[1, 2] = mean(x[1:4, 3:5]) + 2 * x[3, 4] = 13.5 + 38 = 51.5
    whole = record_whole(graph, x, [node])
    assert float(whole.outputs[node][0, 0, 1, 2]) == 51.5
    assert float(whole.outputs[node][0, 0, 0, 0]) == 3.0 + 12.0
    cone = record_cone(graph, x, node, torch.tensor([0]), torch.tensor([[1, 2]]))
    assert float(cone.outputs[node][0, 0, 0, 0]) == 51.5
    # The max pool's switch of output (1, 2) is input (3, 4), flat 19, in both recordings.
    assert int(whole.switches["max"][0, 0, 1, 2]) == 19
    assert 19 in cone.switches["max"][0].reshape(-1).tolist()
    # Back: 51.5 * (1/6 on x[1:4, 3:5]) + 51.5 * 2 at x[3, 4].
    want = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    want[0, 0, 1:4, 3:5] = 51.5 / 6
    want[0, 0, 3, 4] += 51.5 * 2
    for how in PLANS:
        proj, act = project_positions(
            graph, x, node, torch.tensor([0]), torch.tensor([0]), torch.tensor([[1, 2]]), how=how
        )
        assert float(act[0]) == 51.5
        assert_close(proj, want, str(how))


def test_hand_set_strided_dilated_grouped_conv_corner_is_literal():
    """A 2-group conv (3x3, stride 2, padding 2, dilation 2) of ones: the corner seed of
    channel 1 reads input channel 1 at rows/cols {-2, 0, 2} (two of three in the padding)."""
    conv = nn.Conv2d(2, 2, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.ReLU()).double().eval()
    x = torch.ones(1, 2, 6, 6, dtype=torch.float64)
    x[0, 1] = 2.0
    graph = build_graph(model, (6, 6))
    want = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    want[0, 1, 0:3:2, 0:3:2] = 8.0  # the seed 4 taps * 2 = 8, sent back on each tap
    for how in PLANS:
        proj, act = project_positions(
            graph, x, "1", torch.tensor([0]), torch.tensor([1]), torch.tensor([[0, 0]]), how=how
        )
        assert float(act[0]) == 8.0
        assert_close(proj, want, str(how))


def test_deconvolve_by_block_number_equals_the_node_name():
    model = alexnet_like(3).double().eval()
    x = _images(45, n=2, seed=8)
    graph = build_graph(model, (45, 45))
    for layer in (1, 2, 3):
        by_number = deconvolve(model, x, layer, [2, 5], mode="max", graph=graph)
        by_name = deconvolve(model, x, graph.node(layer).name, [2, 5], mode="max", graph=graph)
        assert torch.equal(by_number.projections, by_name.projections)
        assert by_number.layer == layer


def test_a_seed_without_a_cone_takes_the_whole_walk():
    """A logit reads every position: its seeds go back over whole maps and equal autograd."""
    model, graph = zoo_model("vgg11"), zoo_graph("vgg11")
    x = _images(64, seed=9)
    logit = [n for n in graph.nodes if n.seedable and not n.hidden][-1].name
    assert graph.frames(logit) is None
    rec = record_whole(graph, x, [logit])
    proj, act, pos = project_recorded(
        graph, rec, logit, torch.tensor([0, 1]), torch.tensor([3, 7]), mode="max", walk="cone"
    )
    want = reference(model, x, {logit: [3, 7]}, "deconvnet")[logit]
    assert_close(proj, want[0])


@pytest.mark.parametrize("shape", [(60, 2, 5, 4), (3, 64, 20, 24)])
def test_fill_outside_sets_exactly_the_positions_off_the_map(shape):
    """Each row is a window at its own top-left; what lies off an ``extent`` map takes the
    value, the rest is untouched (many small rows and a few large ones alike)."""
    gen = torch.Generator().manual_seed(4)
    t = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
    extent = (7, 9)
    origin = torch.stack(
        [
            torch.randint(-shape[2], extent[0] + 1, (shape[0],), generator=gen),
            torch.randint(-shape[3], extent[1] + 1, (shape[0],), generator=gen),
        ],
        1,
    )
    want = t.clone()
    for s in range(shape[0]):
        for i in range(shape[2]):
            for j in range(shape[3]):
                y, x = int(origin[s, 0]) + i, int(origin[s, 1]) + j
                if not (0 <= y < extent[0] and 0 <= x < extent[1]):
                    want[s, :, i, j] = float("-inf")
    got = fill_outside(t.clone(), origin, extent, float("-inf"))
    assert torch.equal(got, want)
