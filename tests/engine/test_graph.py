"""The traced graph: torchvision's node names, legacy layer numbers, receptive fields equal to
the gradient's support, one-line errors, the model left as found, and today's literal
deconvnet cases run through the graph engine."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import TINY_INPUT, alexnet_like, assert_close, tiny_model
from graph_reference import (
    ZOO,
    extractor,
    reference,
    rule_patches,
    zoo_graph,  # noqa: F401
    zoo_model,
)
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from deconvviz.engine.deconv import deconvnet
from deconvviz.engine.deconv.deconvnet import RULES, deconvolve, record_graph
from deconvviz.engine.net.geometry.patches import boxes_for, receptive_box
from deconvviz.engine.net.graph import build_graph
from deconvviz.engine.net.layers import conv_stack, get_layer, list_layers
from deconvviz.errors import DeconvvizError
from deconvviz.models.architectures import CifarCNN

# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", list(ZOO))
def test_node_names_are_torchvisions(name):
    graph = zoo_graph(name)
    assert graph.names() == get_graph_node_names(zoo_model(name))[1]


def test_examples_of_names_and_reuse():
    names = set(zoo_graph("googlenet").names())
    assert {"inception4a.branch2.1.conv", "inception4a.cat", "fc"} <= names
    resnet = zoo_graph("resnet18")
    # The block's ReLU module is used twice: two nodes, one per use.
    assert resnet.node("layer3.1.relu").op == resnet.node("layer3.1.relu_1").op == "relu"
    assert resnet.node("layer3.1.relu").module is resnet.node("layer3.1.relu_1").module
    assert resnet.node("layer3.1.add").parents == ("layer3.1.bn2", "layer3.0.relu_1")
    # torchvision keeps Conv2dNormActivation whole; its steps are opened up, hidden.
    mobile = zoo_graph("mobilenet_v2")
    assert "features.1.conv.0.0" not in mobile.names()
    assert mobile.node("features.1.conv.0.0").op == "conv"
    assert mobile.node("features.1.conv.0").op == "relu6"
    assert mobile.node("features.1.conv.0").parents == ("features.1.conv.0.1",)


# ----------------------------------------------------------------------------- legacy layers

LEGACY = [
    ("cifar_cnn", lambda: CifarCNN(hidden=8), 32),
    ("tiny", tiny_model, 5),
    ("alexnet_like", lambda: alexnet_like(0), 45),
    ("alexnet.features", lambda: torchvision.models.alexnet().features, 67),
    ("alexnet", lambda: zoo_model("alexnet"), 96),
    ("vgg11_bn", lambda: zoo_model("vgg11_bn"), 64),
]


class _SumPool(nn.Module):
    """A max pool's windows summed: every input of a window reaches its output."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        assert pool.dilation in (1, (1, 1))
        self.pool = pool

    def forward(self, x):
        p = self.pool
        return F.avg_pool2d(
            x, p.kernel_size, p.stride, p.padding, p.ceil_mode, True, divisor_override=1
        )


def _support_box(grad):
    """``(y0, x0, y1, x1)`` of the pixels where ``grad`` ``(C, H, W)`` is not zero."""
    support = grad.abs().sum(0).nonzero()
    return (
        int(support[:, 0].min()),
        int(support[:, 1].min()),
        int(support[:, 0].max()) + 1,
        int(support[:, 1].max()) + 1,
    )


def _support_stack(stack: nn.Sequential) -> nn.Sequential:
    """An independent stand-in of a plain stack for supports, float64: every conv's weight
    ones and no bias, every max pool a sum pool, pointwise modules dropped."""
    mods = []
    for m in stack:
        if isinstance(m, nn.Conv2d):
            c = nn.Conv2d(
                m.in_channels,
                m.out_channels,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                m.groups,
                bias=False,
            )
            nn.init.ones_(c.weight)
            mods.append(c.double())
        elif isinstance(m, nn.MaxPool2d):
            mods.append(_SumPool(m))
        else:
            assert isinstance(m, (nn.ReLU, nn.BatchNorm2d, nn.Dropout)), m
            mods.append(nn.Identity())
    return nn.Sequential(*mods)


@pytest.mark.parametrize("make,size", [c[1:] for c in LEGACY], ids=[c[0] for c in LEGACY])
def test_list_layers_receptive_fields_are_the_support_of_the_gradient(make, size):
    """Each layer's sizes, and each position's receptive field clipped at the border (what
    a report's patches cut), against autograd in float64 on a stand-in of the stack where
    nothing cancels: the bounding box of where one position's gradient reaches the image.
    Layer L names the node that ends its block, in the graph as in ``list_layers``."""
    model = make()
    stack = conv_stack(model)
    layers = list_layers(model, (size, size))
    graph = build_graph(model, (size, size))
    twin = _support_stack(stack)
    prefix = "features." if stack is not model else ""
    assert len(layers) == len(graph.layers) == sum(isinstance(m, nn.Conv2d) for m in stack)
    x = torch.ones(1, stack[0].in_channels, size, size, dtype=torch.float64, requires_grad=True)
    for L, info in enumerate(layers, start=1):
        assert graph.node(L).name == info.name == f"{prefix}{info.end - 1}"
        assert info.index == L and info.path == f"{prefix}{info.start}"
        assert isinstance(stack[info.start], nn.Conv2d)
        assert tuple(twin[: info.start](x).shape[-2:]) == info.input_size
        out = twin[: info.end](x)
        assert (out.shape[1], tuple(out.shape[-2:])) == (info.features, info.output_size)
        node = graph.info(L)
        h, w = info.output_size
        (grad,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
        read = _support_box(grad[0])  # what the layer reads of the image at all
        for pos in {(0, 0), (h // 2, w // 3), (h - 1, w - 1)}:
            (grad,) = torch.autograd.grad(out[0, :, pos[0], pos[1]].sum(), x, retain_graph=True)
            want = _support_box(grad[0])
            assert node.box(pos) == want, (L, pos)
            # The field from stride and offset, clipped at the border, holds the support;
            # it is wider only by image rows no unit reads (AlexNet's 11x11/4 conv on 67 px).
            y0, x0, y1, x1 = receptive_box(info, pos)
            assert (
                max(y0, read[0]),
                max(x0, read[1]),
                min(y1, read[2]),
                min(x1, read[3]),
            ) == want, (L, pos)
    if prefix:
        assert graph.node("2").name == graph.node(2).name
    else:  # a bare Sequential's node "2" is its module 2: a name wins over a number string
        assert graph.node("2").name == "2"


# (index, path, start, end, features, input_size, output_size, rf_size, rf_jump, rf_start),
# as list_layers gave them before it read the graph; by hand for VGG-11: a 3x3 pad-1 conv
# widens the field by 2 jumps and moves its start back 1 jump, a 2x2/2 pool widens it by 1
# jump and doubles the jump.
BEFORE = {
    "bundled CNN, 32 px": (
        lambda: CifarCNN(),
        32,
        [
            (1, "features.0", 0, 3, 32, (32, 32), (16, 16), (6, 6), (2, 2), (-2, -2)),
            (2, "features.3", 3, 6, 64, (16, 16), (8, 8), (16, 16), (4, 4), (-6, -6)),
        ],
    ),
    "AlexNet, 224 px": (
        lambda: torchvision.models.alexnet(),
        224,
        [
            (1, "features.0", 0, 3, 64, (224, 224), (27, 27), (19, 19), (8, 8), (-2, -2)),
            (2, "features.3", 3, 6, 192, (27, 27), (13, 13), (67, 67), (16, 16), (-18, -18)),
            (3, "features.6", 6, 8, 384, (13, 13), (13, 13), (99, 99), (16, 16), (-34, -34)),
            (4, "features.8", 8, 10, 256, (13, 13), (13, 13), (131, 131), (16, 16), (-50, -50)),
            (5, "features.10", 10, 13, 256, (13, 13), (6, 6), (195, 195), (32, 32), (-66, -66)),
        ],
    ),
    "VGG-11, 224 px": (
        lambda: torchvision.models.vgg11(),
        224,
        [
            (1, "features.0", 0, 3, 64, (224, 224), (112, 112), (4, 4), (2, 2), (-1, -1)),
            (2, "features.3", 3, 6, 128, (112, 112), (56, 56), (10, 10), (4, 4), (-3, -3)),
            (3, "features.6", 6, 8, 256, (56, 56), (56, 56), (18, 18), (4, 4), (-7, -7)),
            (4, "features.8", 8, 11, 256, (56, 56), (28, 28), (30, 30), (8, 8), (-11, -11)),
            (5, "features.11", 11, 13, 512, (28, 28), (28, 28), (46, 46), (8, 8), (-19, -19)),
            (6, "features.13", 13, 16, 512, (28, 28), (14, 14), (70, 70), (16, 16), (-27, -27)),
            (7, "features.16", 16, 18, 512, (14, 14), (14, 14), (102, 102), (16, 16), (-43, -43)),
            (8, "features.18", 18, 21, 512, (14, 14), (7, 7), (150, 150), (32, 32), (-59, -59)),
        ],
    ),
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_list_layers_values_as_before(name):
    make, size, want = BEFORE[name]
    got = [
        (
            i.index,
            i.path,
            i.start,
            i.end,
            i.features,
            i.input_size,
            i.output_size,
            i.rf_size,
            i.rf_jump,
            i.rf_start,
        )
        for i in list_layers(make(), (size, size))
    ]
    assert got == want


def test_list_layers_of_a_network_without_numbered_layers_is_one_line():
    with pytest.raises(DeconvvizError, match=r"^ResNet has no 'features' sequence; numbered"):
        list_layers(zoo_model("resnet18"))
    with pytest.raises(DeconvvizError, match=r"^the model's conv stack has no Conv2d layer$"):
        list_layers(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)))
    with pytest.raises(
        DeconvvizError, match=r"^layer 3 is out of range: this network has layers 1\.\.2 "
    ):
        get_layer(CifarCNN(), 3)


def test_a_model_is_traced_once(monkeypatch):
    """deconvolve without a graph, list_layers and the scan's batch size read the model's one
    traced graph: with torch.fx refusing to trace after the first call, calls at other image
    sizes and layers give what a freshly traced twin gives."""
    import copy

    from torchvision.models.feature_extraction import NodePathTracer

    from deconvviz.engine.scan import scan_batch_size

    model = CifarCNN(hidden=8).double().eval()
    twin = copy.deepcopy(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = deconvolve(model, x, 1, [0, 3], [0, 1])
    want = [
        deconvolve(twin, x[:, :, :24, :24], 2, [5, 1], [1, 0]).projections,
        list_layers(copy.deepcopy(model), (24, 24)),
        scan_batch_size(copy.deepcopy(model), (24, 24)),
    ]

    def refuse(self, *args, **kwargs):
        raise AssertionError("the network was traced again")

    monkeypatch.setattr(NodePathTracer, "trace", refuse)
    assert torch.equal(deconvolve(model, x, 1, [0, 3], [0, 1]).projections, first.projections)
    assert torch.equal(deconvolve(model, x[:, :, :24, :24], 2, [5, 1], [1, 0]).projections, want[0])
    assert list_layers(model, (24, 24)) == want[1]
    assert scan_batch_size(model, (24, 24)) == want[2]


def test_the_traced_graph_does_not_keep_its_model_alive():
    import gc
    import weakref

    from deconvviz.engine.net.network import graph_of

    model = CifarCNN(hidden=8)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    deconvolve(model, x, 2, 0)
    assert graph_of(model, (24, 24)).model is model
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_no_numbers_for_a_network_that_is_not_a_plain_stack():
    with pytest.raises(
        DeconvvizError,
        match=r"^layer 2: numbered layers exist only for a plain "
        r"conv stack, which ResNet is not; name a node instead, e\.g\. 'conv1' ",
    ):
        zoo_graph("resnet18").node(2)


# ----------------------------------------------------------------------------- receptive fields

# Plain stacks (VGG, AlexNet) are checked through list_layers above.
SUPPORT = ["resnet18", "bottleneck", "googlenet", "densenet121", "mobilenet_v2", "squeezenet"]


@pytest.mark.parametrize("name", SUPPORT)
def test_receptive_box_is_the_support_of_the_gradient(name):
    """With positive weights nothing cancels; going back through every max pool's whole
    window (nearest) and every ReLU by the deconvnet rule, the gradient of a position (all
    its channels: a concatenation's box is the union of its branches') reaches exactly the
    pixels that can influence it."""
    model, graph = zoo_model(name, positive=True), zoo_graph(name, positive=True)
    kinds = ("conv", "add", "cat", "maxpool", "avgpool", "relu6")
    nodes = []
    for kind in kinds:
        found = [n.name for n in graph.nodes if n.op == kind and not n.hidden]
        nodes += found[len(found) // 3 : len(found) // 3 + 1] + found[-1:]
    x = torch.rand(
        3, 3, *graph.input_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    fe = extractor(model, tuple(nodes))
    checked = 0
    with rule_patches("deconvnet", "nearest"):
        xx = x.clone().requires_grad_(True)
        outs = fe(xx)
        for node in nodes:
            info = graph.info(node)
            h, w = info.output_size
            pos = [(0, 0), (h // 2, w // 3), (h - 1, w - 1)]
            target = sum(outs[node][s, :, r, c].sum() for s, (r, c) in enumerate(pos))
            (grad,) = torch.autograd.grad(target, xx, retain_graph=True)
            for s, p in enumerate(pos):
                support = grad[s].abs().sum(0).nonzero()
                assert support.numel(), f"{name} {node}: nothing reaches {p}"
                want = (
                    int(support[:, 0].min()),
                    int(support[:, 1].min()),
                    int(support[:, 0].max()) + 1,
                    int(support[:, 1].max()) + 1,
                )
                assert info.box(p) == want, f"{name} {node} at {p}"
                checked += 1
    assert checked >= 3 * len(kinds[:2])


@pytest.mark.parametrize("name", list(ZOO))
def test_affine_field_clipped_holds_the_exact_box(name):
    """Where a node has stride and offset (every node of these networks but uneven adaptive
    pools), the classic window clipped at the border (what the report's patches cut,
    :mod:`deconvviz.engine.net.geometry`) holds each position's exact box, and equals it unless
    the first layer never reads the image's last rows (SqueezeNet's 7x7/2 conv on 64 px)."""
    graph = zoo_graph(name)
    drops = name in ("squeezenet",)
    for info in graph.infos(all_nodes=True):
        h, w = info.output_size
        pos = torch.cartesian_prod(torch.arange(h), torch.arange(w))
        exact = info.boxes(pos)
        if info.exact:
            clipped = boxes_for(info, pos)
            assert (clipped[:, :2] <= exact[:, :2]).all() and (clipped[:, 2:] >= exact[:, 2:]).all()
            assert drops or torch.equal(clipped, exact), info.name
        assert tuple(exact[-1].tolist()) == info.box(tuple(pos[-1].tolist()))


def test_uneven_pools_have_exact_boxes_without_an_affine_field():
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AdaptiveAvgPool2d((4, 3)),
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    graph = build_graph(model, (11, 7), in_channels=2)
    info = graph.info("3")
    assert not info.exact and info.output_size == (4, 3)  # from 6x4: uneven windows
    x = torch.ones(1, 2, 11, 7, dtype=torch.float64, requires_grad=True)
    out = model(x)
    for r in range(4):
        for c in range(3):
            (grad,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
            support = grad[0].abs().sum(0).nonzero()
            assert info.box((r, c)) == (
                int(support[:, 0].min()),
                int(support[:, 1].min()),
                int(support[:, 0].max()) + 1,
                int(support[:, 1].max()) + 1,
            )
    # Its window (what patches cut) covers every position's box.
    assert (info.rf_start, info.rf_size, info.rf_jump) == ((0, 0), (11, 7), (0, 0))


def test_branches_take_the_union_of_their_fields():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.small, self.big = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 5, padding=2)

        def forward(self, x):
            a, b = self.small(x), self.big(x)
            return torch.cat([a, b], 1) + torch.cat([b, a], 1)

    graph = build_graph(TwoPaths(), (9, 9), in_channels=1)
    assert graph.info("small").rf_size == (1, 1)
    for node in ("cat", "add"):
        info = graph.info(node)
        assert (info.rf_size, info.rf_start, info.rf_jump) == ((5, 5), (-2, -2), (1, 1))
        assert info.box((0, 8)) == (0, 6, 3, 9)


# ----------------------------------------------------------------------------- errors


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_model_is_one_line():
    with pytest.raises(
        DeconvvizError,
        match=r"^Branchy cannot be traced by torch\.fx "
        r"\(TraceError: .*\): its forward has data-dependent control flow "
        r".*pass a traceable sub-module instead",
    ) as err:
        build_graph(Branchy(), (8, 8))
    assert "\n" not in str(err.value)


def test_unknown_node_lists_the_closest_names():
    with pytest.raises(
        DeconvvizError,
        match=r"^no node named 'layer3\.1\.relu2' in ResNet "
        r"\(closest: layer3\.1\.relu, layer3\.1\.relu_1, .*; see 'deconvviz "
        r"layers --all'\)$",
    ):
        deconvolve(
            zoo_model("resnet18"),
            torch.zeros(1, 3, 64, 64, dtype=torch.float64),
            "layer3.1.relu2",
            0,
            graph=zoo_graph("resnet18"),
        )


class Gated(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv1, self.act, self.conv2 = nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


class FunctionalSoftmax(Gated):
    def forward(self, x):
        return self.conv2(torch.softmax(self.conv1(x), 1))


class Squared(Gated):
    def forward(self, x):
        y = self.conv1(x)
        return self.conv2(y * y)


@pytest.mark.parametrize(
    "model,label",
    [
        (Gated(nn.Softmax(dim=1)), r"node 'act' \(Softmax\)"),
        (Gated(nn.LogSoftmax(dim=1)), r"node 'act' \(LogSoftmax\)"),
        (
            Squared(nn.Identity()),
            r"node 'mul' \(operator\.mul\), a product of two signals that is "
            r"not a gate \(a sigmoid or hard sigmoid of another signal\),",
        ),
        (FunctionalSoftmax(nn.Identity()), r"node 'softmax' \(torch\.softmax\)"),
    ],
)
def test_op_without_a_rule_is_named(model, label):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(
        DeconvvizError,
        match=rf"^{label} has no deconvnet rule, so 'conv2' "
        r"cannot be projected through it \(rules exist for: Conv2d",
    ):
        deconvolve(model, x, "conv2", 0)
    # On the op itself; below it, seeds still go back.
    with pytest.raises(DeconvvizError, match=rf"^{label} has no deconvnet rule \(rules exist"):
        deconvolve(model, x, label.split("'")[1], 0)
    assert deconvolve(model, x, "conv1", 0).projections.shape == (1, 3, 8, 8)


class Sized(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.view(y.size(0), -1)


def test_a_seed_needs_a_tensor_node():
    model, x = Sized(), torch.randn(1, 3, 5, 5)
    with pytest.raises(
        DeconvvizError,
        match=r"^node 'size' \(Tensor\.size\) gives no tensor "
        r"per image; a seed needs a \(C, H, W\) or \(C,\) output$",
    ):
        deconvolve(model, x, "size", 0)
    # A flat output is one position: a seed on unit 13 of the view is conv channel 1 at (1, 1).
    flat = deconvolve(model, x, "view", 13, mode="position")
    conv = deconvolve(model, x, "conv", 1, mode="position", position=(1, 1))
    assert flat.position.tolist() == [[0, 0]]
    assert_close(flat.projections, conv.projections)


def test_ranges_and_sizes_are_pinned():
    model, graph = zoo_model("resnet18"), zoo_graph("resnet18")
    x = torch.zeros(1, 3, 64, 64, dtype=torch.float64)
    with pytest.raises(
        DeconvvizError,
        match=r"^feature 64 is out of range: node 'layer1\.0\."
        r"relu' has features 0\.\.63 \(see 'deconvviz layers'\)$",
    ):
        deconvolve(model, x, "layer1.0.relu", 64, graph=graph)
    with pytest.raises(
        DeconvvizError,
        match=r"^position out of range: node 'layer4\.1\.add' "
        r"output is 2x2$",
    ):
        deconvolve(model, x, "layer4.1.add", 0, mode="position", position=(2, 0), graph=graph)
    with pytest.raises(DeconvvizError, match=r"^images have 1 channels; the network takes 3$"):
        deconvolve(model, x[:, :1], "conv1", 0, graph=graph)
    alexnet, small = zoo_model("alexnet"), torch.ones(1, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(
        DeconvvizError,
        match=r"^node 'features\.5' fails on a 16x16 image "
        r"\(.*Output size is too small\)$",
    ):
        deconvolve(alexnet, small, "classifier.6", 0, graph=zoo_graph("alexnet"))
    # The layers before it still run on the small image.
    assert deconvolve(alexnet, small, "features.1", 1).projections.shape == (1, 3, 16, 16)
    with pytest.raises(DeconvvizError, match=r"the graph was built for another model"):
        deconvolve(zoo_model("alexnet"), x, "features.0", 0, graph=graph)


# ----------------------------------------------------------------------------- state


def _hooks(model):
    return [
        (
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(getattr(m, "_backward_pre_hooks", {})),
        )
        for m in model.modules()
    ]


def _state(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        _hooks(model),
        [p.detach().clone() for p in model.state_dict().values()],
    )


def _assert_state(model, before):
    flags, grads, hooks, tensors = _state(model)
    assert flags == before[0] and grads == before[1] and hooks == before[2]
    assert all(torch.equal(a, b) for a, b in zip(tensors, before[3]))


def test_model_left_as_found_also_when_the_forward_raises(monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).train()
    model.layer1.eval()  # mixed modes are kept per module
    model.conv1.weight.requires_grad_(False)
    model.fc.register_forward_hook(lambda *a: None)  # the user's own hook stays
    before = _state(model)
    x = torch.randn(2, 3, 32, 32)
    graph = build_graph(model, (32, 32))
    _assert_state(model, before)
    for rule in RULES:
        deconvolve(model, x, "layer2.0.add", [1, 2], rule=rule, graph=graph)
        _assert_state(model, before)
    with pytest.raises(DeconvvizError):
        deconvolve(model, x, "layer2.0.add", 999, graph=graph)
    _assert_state(model, before)

    def boom(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.layer2[0].conv2, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        record_graph(graph, x, ["layer2.0.add"])
    monkeypatch.undo()
    _assert_state(model, before)


def test_node_outputs_equal_torchvisions_feature_extractor():
    model, graph = zoo_model("googlenet"), zoo_graph("googlenet")
    nodes = ("maxpool2", "inception3a.branch2.1.relu", "inception4a.cat", "fc")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ours = deconvnet.node_outputs(graph, x, nodes)
    with torch.no_grad():
        theirs = extractor(model, nodes)(x)
    assert list(ours) == list(nodes)
    for n in nodes:  # channels-last convolutions round differently: equal to 1e-12
        torch.testing.assert_close(ours[n], theirs[n], rtol=1e-12, atol=1e-12)


class _StdConv(nn.Conv2d):
    """A conv with its own forward (weight standardisation, as timm's StdConv2d)."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / w.std((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def test_batch_norms_fold_into_plain_convs_only():
    """A conv and the batch norm after it run as one folded conv (the same numbers), but a
    conv with its own forward (traced through), a norm with a hook, and a conv whose output
    is asked for run as the network runs them."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, bias=False), bn1=nn.BatchNorm2d(4), relu1=nn.ReLU(),
        conv2=_StdConv(4, 5, 3), bn2=nn.BatchNorm2d(5), relu2=nn.ReLU(),
        conv3=nn.Conv2d(5, 6, 3), bn3=nn.BatchNorm2d(6), relu3=nn.ReLU(),
    )).double().eval()  # fmt: skip
    with torch.no_grad():
        for bn in (model.bn1, model.bn2, model.bn3):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    model.bn3.register_forward_hook(lambda m, i, o: 2 * o)
    graph = build_graph(model, (16, 16))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ours = deconvnet.node_outputs(graph, x, ["conv1", "relu3"])
    with torch.no_grad():
        assert_close(ours["relu3"], model(x), "folded, own forward, hooked")
        assert_close(ours["conv1"], model.conv1(x), "a conv asked for")


def test_frozen_batch_norms_fold_and_go_back_by_their_scale():
    """torchvision's FrozenBatchNorm2d (detection backbones) folds into its conv going up and
    goes back by its scale: node outputs equal the network's, projections autograd's, for
    every rule (float64)."""
    torch.manual_seed(1)
    frozen = torchvision.ops.FrozenBatchNorm2d
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3), bn1=frozen(4), relu1=nn.ReLU(),
        pool=nn.MaxPool2d(2), conv2=nn.Conv2d(4, 5, 3, bias=False), bn2=frozen(5),
        relu2=nn.ReLU(),
    )).double().eval()  # fmt: skip
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    graph = build_graph(model, (16, 16))
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert_close(deconvnet.node_outputs(graph, x, ["relu2"])["relu2"], model(x))
    feats = [0, 2, 4]
    want = reference(model, x, {"relu2": feats}, RULES)
    for rule in RULES:
        got = deconvolve(model, x, "relu2", torch.tensor(feats), rule=rule, graph=graph)
        assert_close(got.projections, want[rule]["relu2"][0], rule)


def test_recording_stops_at_the_seed_node():
    graph = zoo_graph("resnet18")
    rec = record_graph(
        graph, torch.zeros(2, 3, 64, 64, dtype=torch.float64), ["layer1.0.relu_1"], masks=True
    )
    assert set(rec.outputs) == {"layer1.0.relu_1"}
    assert set(rec.switches) == {"maxpool"}
    assert set(rec.masks) == {"relu", "layer1.0.relu", "layer1.0.relu_1"}
    assert "layer2.0.conv1" not in rec.shapes and "layer1.1.conv1" not in rec.shapes


# ----------------------------------------------------------------------------- literal cases


def test_tiny_switches_and_outputs_are_literal():
    graph = build_graph(tiny_model(), (5, 5), in_channels=1)
    rec = record_graph(graph, TINY_INPUT, ["2", "4"])
    assert torch.equal(
        rec.outputs["2"][0],
        torch.tensor([[[1.0, 0.0], [5.0, 5.0]], [[4.0, 4.0], [1.0, 7.0]]], dtype=torch.float64),
    )
    assert torch.equal(rec.switches["2"][0], torch.tensor([[[0, 2], [9, 15]], [[5, 6], [8, 11]]]))
    assert torch.equal(
        rec.outputs["4"][0, 0], torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    )


def test_conv_transposes_share_the_conv_weights(monkeypatch):
    model = CifarCNN(hidden=8)
    seen = []
    real = F.conv_transpose2d

    def spy(inp, weight, *a, **k):
        seen.append(weight.data_ptr())
        return real(inp, weight, *a, **k)

    monkeypatch.setattr(F, "conv_transpose2d", spy)
    deconvnet.project(model, torch.randn(1, 3, 32, 32), "features.5", 0, mode="map")
    assert seen == [model.features[3].weight.data_ptr(), model.features[0].weight.data_ptr()]


def test_a_network_without_torchvision_modules_is_traced_without_torchvision():
    """torchvision is imported only by networks that use it (it costs over a second): the
    bundled CNN traces, with the same node names, in a process that never imports it."""
    import subprocess
    import sys

    code = (
        "import sys, deconvviz\n"
        "from deconvviz.engine.net.network import graph_of\n"
        "g = graph_of(deconvviz.load_model(None), (32, 32))\n"
        "print(' '.join(n.name for n in g.nodes), 'torchvision' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[-1] == "False"
    from torchvision.models.feature_extraction import get_graph_node_names

    from deconvviz.models.checkpoint import load_model

    assert out[1:-1] == get_graph_node_names(load_model(None))[1][1:]
