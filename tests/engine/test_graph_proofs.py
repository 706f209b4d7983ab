"""The graph deconvnet proven on the networks researchers use: float64 agreement with an
independent autograd computation (torchvision's own feature extractor, every ReLU's backward
replaced by the rule), agreement with Captum where Captum is right, and a network where Captum
is wrong and we are not."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from graph_reference import (
    ZOO,
    nonzero_positions,
    reference,  # noqa: F401
    zoo_graph,
    zoo_model,
)
from torch import nn

from deconvviz.engine.deconv.deconvnet import RULES, Seeds, deconvolve, deconvolve_many
from deconvviz.engine.net.graph import build_graph

# Which node kinds each network has (a seed on each kind is checked).
KINDS = {
    "alexnet": {"conv", "relu", "maxpool", "logit"},
    "vgg11": {"conv", "relu", "maxpool", "logit"},
    "vgg11_bn": {"conv", "batchnorm", "relu", "maxpool", "logit"},
    "resnet18": {"conv", "batchnorm", "relu", "maxpool", "add", "logit"},
    "bottleneck": {"conv", "batchnorm", "relu", "maxpool", "add", "logit"},
    "googlenet": {"conv", "batchnorm", "relu", "maxpool", "cat", "logit"},
    "densenet121": {"conv", "batchnorm", "relu", "maxpool", "avgpool", "cat", "logit"},
    "mobilenet_v2": {"conv", "batchnorm", "relu6", "add", "logit"},
    "squeezenet": {"conv", "relu", "maxpool", "cat", "logit"},
}


def _setup(name):
    return zoo_model(name), zoo_graph(name)


def _picks(graph, kinds):
    """One visible node per kind (the middle one of its kind), and the last node (a logit)."""
    picks = {}
    for kind in sorted(kinds - {"logit"}):
        nodes = [n for n in graph.nodes if n.op == kind and not n.hidden]
        picks[kind] = nodes[len(nodes) // 2].name
    picks["logit"] = [n for n in graph.nodes if n.seedable and not n.hidden][-1].name
    assert len(graph.node(picks["logit"]).shape) == 1
    return picks


def _images(size, n=2, seed=0):
    return torch.randn(
        n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _assert_equal_projection(got, want, context):
    scale = want.abs().max()
    assert scale > 0, f"{context}: the reference is all zero; pick another seed"
    err = float((got - want).abs().max() / scale)
    assert err < 1e-10, f"{context}: relative error {err:.2e}"


@pytest.mark.parametrize("name", list(ZOO))
def test_projections_equal_autograd_with_the_rule(name):
    """Every rule, a seed on every node kind of the network (its strongest activation)."""
    model, graph = _setup(name)
    picks = _picks(graph, KINDS[name])
    x = _images(graph.input_size[0])
    seeds = {node: [1, graph.node(node).shape[0] - 1] for node in picks.values()}
    want = reference(model, x, seeds, RULES)
    for rule in RULES:
        ours = deconvolve_many(
            model, x, [Seeds(n, f) for n, f in seeds.items()], rule=rule, graph=graph
        )
        for (kind, node), got in zip(picks.items(), ours):
            grads, pos, act = want[rule][node]
            assert torch.equal(got.position, pos), f"{name} {node}: seed positions differ"
            torch.testing.assert_close(got.activation, act, rtol=1e-12, atol=1e-12)
            _assert_equal_projection(got.projections, grads, f"{name} {kind} {node} {rule}")


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "googlenet", "mobilenet_v2", "squeezenet"])
def test_map_position_and_nearest_equal_autograd(name):
    model, graph = _setup(name)
    picks = _picks(graph, KINDS[name] & {"conv", "add", "cat", "maxpool"})
    x = _images(graph.input_size[0], seed=1)
    nodes = list(picks.values())[:2]
    seeds = {node: [0, graph.node(node).shape[0] // 2] for node in nodes}
    # Whole maps, every max pool going back to its whole window.
    got = deconvolve_many(
        model,
        x,
        [Seeds(n, f) for n, f in seeds.items()],
        mode="map",
        rule="guided",
        unpool="nearest",
        graph=graph,
    )
    want = reference(model, x, seeds, "guided", mode="map", unpool="nearest")
    for node, p in zip(nodes, got):
        _assert_equal_projection(p.projections, want[node][0], f"{name} {node} map nearest")
    # One given position per seed.
    positions = {node: nonzero_positions(model, x, node, seeds[node]) for node in nodes}
    got = deconvolve_many(
        model,
        x,
        [Seeds(n, f, position=positions[n]) for n, f in seeds.items()],
        mode="position",
        rule="gradient",
        graph=graph,
    )
    want = reference(model, x, seeds, "gradient", positions=positions)
    for node, p in zip(nodes, got):
        assert torch.equal(p.position, positions[node])
        _assert_equal_projection(p.projections, want[node][0], f"{name} {node} position")


def test_batched_chunked_and_one_at_a_time_agree_exactly():
    model, graph = _setup("resnet18")
    x = _images(64, n=3, seed=2)
    idx = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    feat = torch.tensor([0, 5, 9, 63, 17, 33, 2])
    node = "layer1.1.relu_1"
    batched = deconvolve(model, x, node, feat, idx, rule="guided", graph=graph)
    chunked = deconvolve(model, x, node, feat, idx, rule="guided", graph=graph, max_bytes=1)
    assert_close(batched.projections, chunked.projections)
    for s in range(idx.numel()):
        one = deconvolve(
            model, x[idx[s] : idx[s] + 1], node, int(feat[s]), rule="guided", graph=graph
        )
        assert_close(one.projections[0], batched.projections[s], s)
        assert torch.equal(one.position[0], batched.position[s])


# ----------------------------------------------------------------------------- Captum


def _captum(cls, model, layer, x, feature, position):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model, layer).attribute(x, neuron_selector=(feature,) + tuple(position))


CAPTUM_CASES = [
    ("vgg11_bn", "features.10", "features.10"),  # a ReLU
    ("vgg11_bn", "features.28", "features.28"),  # the last max pool
    ("resnet18", "layer1.0.conv2", "layer1.0.conv2"),
    ("resnet18", "maxpool", "maxpool"),
    ("resnet18", "layer2.1.relu_1", "layer2.1"),  # a block's output: its reused ReLU
]


@pytest.mark.parametrize("name,node,module", CAPTUM_CASES)
def test_captum_agrees_where_it_is_right(name, node, module):
    captum_attr = pytest.importorskip("captum.attr")
    model, graph = _setup(name)
    x = _images(64, n=2, seed=3)
    layer = model.get_submodule(module)
    for rule, cls in (
        ("deconvnet", captum_attr.NeuronDeconvolution),
        ("guided", captum_attr.NeuronGuidedBackprop),
    ):
        ours = deconvolve(model, x, node, [3, 7], rule=rule, graph=graph)
        for s in range(2):
            theirs = _captum(
                cls, model, layer, x[s : s + 1], int(ours.feature[s]), ours.position[s].tolist()
            )[0]
            # Captum seeds the unit with 1, the deconvnet with its activation.
            _assert_equal_projection(
                ours.projections[s], theirs * ours.activation[s], f"captum {name} {node} {rule}"
            )


class Tricky(nn.Module):
    """F.relu, an in-place ReLU module, and one ReLU module used three times."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv5 = nn.Conv2d(8, 4, 3, padding=1)
        self.inplace = nn.ReLU(inplace=True)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(self.inplace(self.conv2(x)))
        y = self.act(self.conv3(x))
        y = self.act(self.conv4(y) + x)
        return self.act(self.conv5(y))


def test_relu_forms_right_where_captum_is_wrong():
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(4)
    model = Tricky().double().eval()
    graph = build_graph(model, (12, 12))
    assert [n.name for n in graph.nodes if n.op == "relu"] == [
        "relu",
        "inplace",
        "act",
        "act_1",
        "act_2",
    ]
    x = _images(12, n=2, seed=4)
    for rule, cls in (
        ("deconvnet", captum_attr.NeuronDeconvolution),
        ("guided", captum_attr.NeuronGuidedBackprop),
    ):
        ours = deconvolve(model, x, "conv5", [1, 2], rule=rule, graph=graph)
        want = reference(model, x, {"conv5": [1, 2]}, rule)["conv5"][0]
        for s in range(2):
            _assert_equal_projection(ours.projections[s], want[s], f"tricky {rule}")
            theirs = (
                _captum(
                    cls,
                    model,
                    model.conv5,
                    x[s : s + 1],
                    int(ours.feature[s]),
                    ours.position[s].tolist(),
                )[0]
                * ours.activation[s]
            )
            err = float((theirs - want[s]).abs().max() / want[s].abs().max())
            assert err > 1e-3, f"Captum's {rule} matched the reference ({err:.1e})"


def test_relu6_rule_is_the_clamps_gradient_support():
    """ReLU6 goes back like ReLU with mask 0 < y < 6 (guided, gradient); the deconvnet
    rule rectifies the signal only, as for ReLU."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU6()).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    x = torch.tensor([[[[-1.0, 3.0, 7.0, 6.0]]]], dtype=torch.float64)
    got = {
        rule: deconvolve(model, x, "1", 0, mode="map", rule=rule).projections[0, 0, 0]
        for rule in RULES
    }
    # map seed = (0, 3, 6, 6); the mask keeps only 0 < y < 6, i.e. the 3.
    assert got["gradient"].tolist() == [0.0, 3.0, 0.0, 0.0]
    assert got["guided"].tolist() == [0.0, 3.0, 0.0, 0.0]
    assert got["deconvnet"].tolist() == [0.0, 3.0, 6.0, 6.0]


@pytest.mark.parametrize("name", ["bottleneck", "mobilenet_v2", "googlenet", "alexnet"])
def test_closed_form_for_one_value_seeds_equals_the_plain_walk(name):
    """Grouped (ResNeXt), depthwise (MobileNet), ceil-mode pools (GoogLeNet), strided and
    overlapping pools (AlexNet): the point walk and filter stamp give the plain walk's result."""
    from deconvviz.engine.deconv.deconvnet import record_graph
    from deconvviz.engine.deconv.projecting import project_recorded

    model, graph = _setup(name)
    kinds = {"conv", "relu", "relu6", "maxpool", "batchnorm", "add", "cat"} & set(
        n.op for n in graph.nodes
    )
    nodes = list(_picks(graph, kinds).values())[-4:-1]
    x = _images(graph.input_size[0], n=3, seed=5)
    idx = torch.tensor([0, 1, 2, 2])
    for rule in RULES:
        rec = record_graph(graph, x, nodes, masks=rule != "deconvnet")
        for node in nodes:
            c = graph.node(node).shape[0]
            feat = torch.tensor([0, c // 3, c - 1, c // 2])
            fast = project_recorded(graph, rec, node, idx, feat, rule=rule)
            slow = project_recorded(graph, rec, node, idx, feat, rule=rule, closed_form=False)
            assert torch.equal(fast[1], slow[1]) and torch.equal(fast[2], slow[2])
            torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=1e-12)


class OpZoo(nn.Module):
    """Every other op with a rule, in its functional and module forms."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding="same")
        self.weight = nn.Parameter(torch.randn(8, 6, 3, 3) * 0.3)  # a functional conv's
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveMaxPool2d((5, 4))
        self.drop = nn.Dropout2d(0.5)
        self.keep = nn.Identity()
        self.head = nn.Parameter(torch.randn(10, 8 * 3 * 2 + 8) * 0.3)  # a functional linear's

    def forward(self, x):
        x = F.relu(self.conv(x), inplace=True)
        y = F.conv2d(x, self.weight, None, stride=2, padding=1, dilation=2)  # 17 -> 8
        y = torch.relu(self.bn(y))
        y = F.max_pool2d(y, 3, stride=1, padding=1)
        a = F.avg_pool2d(y, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        b = 0.5 * F.avg_pool2d(y, 2, stride=2, padding=1) - a.neg()  # 5x5 each
        z = self.keep(self.drop(F.relu6(a + b) * 2.0)).contiguous()
        z = F.adaptive_avg_pool2d(self.pool(z), (3, 2))  # uneven windows
        g = z.mean((2, 3))
        flat = torch.cat([z.permute(0, 1, 3, 2).reshape(z.shape[0], -1), g / 3.0], dim=1)
        return F.linear(flat.view(flat.size(0), -1), self.head)


@pytest.mark.parametrize("rule", RULES)
def test_every_other_op_equals_autograd(rule):
    torch.manual_seed(6)
    model = OpZoo().double().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
        model.bn.weight.uniform_(0.5, 1.5)
    graph = build_graph(model, (17, 17))
    ops = {n.op for n in graph.nodes}
    assert {
        "conv",
        "batchnorm",
        "relu",
        "relu6",
        "maxpool",
        "adaptive_maxpool",
        "avgpool",
        "adaptive_avgpool",
        "add",
        "scale",
        "cat",
        "reshape",
        "permute",
        "mean",
        "linear",
        "dropout",
        "identity",
    } <= ops, ops
    assert not graph.info("adaptive_avg_pool2d").exact  # 5 -> 3 windows overlap unevenly
    x = _images(17, seed=7)
    seeds = {"linear": [3, 7], "adaptive_avg_pool2d": [1, 5], "add": [0, 7], "conv2d": [2, 4]}
    for mode in ("max", "map"):
        got = deconvolve_many(
            model, x, [Seeds(n, f) for n, f in seeds.items()], mode=mode, rule=rule, graph=graph
        )
        want = reference(model, x, seeds, rule, mode=mode)
        for node, p in zip(seeds, got):
            _assert_equal_projection(p.projections, want[node][0], f"opzoo {node} {mode}")
