"""Test helpers for the graph engine: the torchvision zoo with random weights, and an
independent reference (torch.autograd through torchvision's own feature extractor, with
every ReLU's backward replaced by the rule).

Not a conftest (the suite's one conftest is tests/conftest.py): imported by name.
"""

from __future__ import annotations

import contextlib
import functools
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import Bottleneck, ResNet

# name -> (factory, input size). The big heads of AlexNet and VGG (9216x4096 and
# 25088x4096 weights) are narrowed to 64 units: same modules, ops and node names, a
# fraction of the memory and time.


def _narrow_head(m):
    c = m.classifier
    for i, f in (
        {1: 64, 4: 64, 6: 10}.items()
        if isinstance(c[1], nn.Linear)
        else {0: 64, 3: 64, 6: 10}.items()
    ):
        c[i] = nn.Linear(c[i].in_features if i in (0, 1) else 64, f)
    return m


ZOO = {
    "alexnet": (lambda: _narrow_head(torchvision.models.alexnet()), 96),
    "vgg11": (lambda: _narrow_head(torchvision.models.vgg11()), 64),
    "vgg11_bn": (lambda: _narrow_head(torchvision.models.vgg11_bn()), 64),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), 64),
    # A Bottleneck ResNet with grouped 3x3 convs (ResNeXt-style), narrow for speed.
    "bottleneck": (
        lambda: ResNet(Bottleneck, [1, 2, 1, 1], groups=2, width_per_group=16, num_classes=10),
        64,
    ),
    "googlenet": (
        lambda: torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=False),
        64,
    ),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), 64),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), 64),
    "squeezenet": (lambda: torchvision.models.squeezenet1_0(num_classes=10), 64),
}


def randomize(model: nn.Module, seed: int, positive: bool = False) -> nn.Module:
    """Deterministic He-scaled random weights; batch norms get random statistics.

    ``positive``: every weight, scale and bias positive (nothing cancels), weights
    scaled by ``1 / fan_in`` so that values stay bounded through a deep net.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(t, std, mean=0.0):
        v = torch.randn(t.shape, generator=g, dtype=torch.float64) * std + mean
        t.copy_(v.abs() if positive else v)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                rand(m.weight, 1.0 / fan_in if positive else math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    rand(m.bias, 0.05)
            elif isinstance(m, nn.BatchNorm2d):
                rand(m.weight, 0.2, 1.0)
                rand(m.bias, 0.1)
                rand(m.running_mean, 0.1)
                m.running_var.copy_(
                    torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5
                )
                m.num_batches_tracked.zero_()
    return model


def zoo_model(name: str, positive: bool = False) -> nn.Module:
    """A float64 eval-mode model of :data:`ZOO` with random weights (built once per session)."""
    return _zoo_model(name, bool(positive))


@functools.lru_cache(maxsize=None)
def _zoo_model(name: str, positive: bool) -> nn.Module:
    make, _ = ZOO[name]
    with torch.device("meta"):
        model = make()
    model = model.to_empty(device="cpu").double()
    return randomize(model, seed=sum(map(ord, name)), positive=positive).eval()


def zoo_size(name: str) -> int:
    return ZOO[name][1]


# ----------------------------------------------------------------------------- the reference


class RuleClamp(torch.autograd.Function):
    """ReLU (``upper`` inf) or ReLU6 (``upper`` 6) whose backward follows ``state["rule"]``
    (read at backward time, so one forward pass serves every rule)."""

    @staticmethod
    def forward(ctx, x, state, upper):
        ctx.state = state
        ctx.save_for_backward((x > 0) & (x < upper))
        return x.clamp(0, upper) if math.isfinite(upper) else x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        rule = ctx.state["rule"]
        if rule == "deconvnet":
            return g.clamp(min=0), None, None
        if rule == "guided":
            return g.clamp(min=0) * mask, None, None
        return g * mask, None, None


@contextlib.contextmanager
def rule_patches(rule: str, unpool: str = "switches"):
    """Every ReLU/ReLU6 (module, F.relu, torch.relu, in-place) goes back by ``rule``;
    ``unpool="nearest"``: every max pool goes back as a sum pool over its windows.

    Yields a dict counting the patched calls (a test checks the patch was used); its
    ``"rule"`` may be changed between backward passes of one forward pass.
    """
    calls = {"relu": 0, "pool": 0, "rule": rule}
    real_hardtanh, real_max_pool2d = F.hardtanh, F.max_pool2d

    def relu(x, inplace=False):
        calls["relu"] += 1
        return RuleClamp.apply(x, calls, math.inf)

    def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
        if (min_val, max_val) != (0.0, 6.0):
            return real_hardtanh(x, min_val, max_val)
        calls["relu"] += 1
        return RuleClamp.apply(x, calls, 6.0)

    def max_pool2d(
        x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
    ):
        calls["pool"] += 1
        value = real_max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
        assert dilation in (1, (1, 1)) and not return_indices
        total = F.avg_pool2d(
            x,
            kernel_size,
            stride,
            padding,
            ceil_mode=ceil_mode,
            count_include_pad=True,
            divisor_override=1,
        )
        return value.detach() + (total - total.detach())  # the value, the sum pool's gradient

    patches = [
        (F, "relu", relu),
        (torch, "relu", lambda x: relu(x)),
        (F, "relu6", lambda x, inplace=False: hardtanh(x, 0.0, 6.0)),
        (F, "hardtanh", hardtanh),
    ]
    if unpool == "nearest":
        patches.append((F, "max_pool2d", max_pool2d))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, fn in patches:
            setattr(owner, name, fn)
        yield calls
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


@functools.lru_cache(maxsize=None)
def extractor(model: nn.Module, nodes: tuple):
    """torchvision's own ``create_feature_extractor`` for ``nodes`` (eval mode)."""
    fe = create_feature_extractor(model, return_nodes=list(nodes))
    return fe.eval()


def reference(
    model: nn.Module,
    images: torch.Tensor,
    seeds: dict,
    rule,
    mode: str = "max",
    unpool: str = "switches",
    positions: dict = None,
):
    """The projections of many seeds, computed by autograd.

    ``seeds`` maps a node name to its features: seed ``s`` of a node is channel
    ``features[s]`` of image ``s``. Returns ``{node: (grads (S, C, H, W), positions
    (S, 2), activation (S,))}``: the gradient of each seed's target w.r.t. its own
    image, with every ReLU's backward set by ``rule`` (a tuple of rules: ``{rule:
    that}``, from one forward pass). The target is ``v * v.detach()`` for the seeded
    value ``v`` (the strongest, first in row-major order, or at ``positions[node][s]``),
    or the sum of that over the map (``mode="map"``), so the gradient is seeded with the
    values, as the deconvnet seeds them.
    """
    rules = (rule,) if isinstance(rule, str) else tuple(rule)
    fe = extractor(model, tuple(seeds))
    x = images.clone().requires_grad_(True)
    result = {r: {} for r in rules}
    with rule_patches(rules[0], unpool) as calls:
        outs = fe(x)
        targets = {}
        for node, features in seeds.items():
            out = outs[node]
            target = out.new_zeros(())
            pos, act = [], []
            for s, f in enumerate(features):
                fmap = out[s, f] if out.dim() == 4 else out[s, f].view(1, 1)
                if mode == "map":
                    target = target + (fmap * fmap.detach()).sum()
                    flat = int(fmap.detach().reshape(-1).argmax())
                elif positions is not None:
                    flat = int(positions[node][s][0]) * fmap.shape[1] + int(positions[node][s][1])
                else:
                    flat = int(fmap.detach().reshape(-1).argmax())
                r, c = divmod(flat, fmap.shape[1])
                pos.append((r, c))
                act.append(float(fmap[r, c].detach()))
                if mode != "map":
                    target = target + fmap[r, c] * fmap[r, c].detach()
            targets[node] = (target, torch.tensor(pos), torch.tensor(act, dtype=torch.float64))
        for r in rules:
            calls["rule"] = r
            for node, (target, pos, act) in targets.items():
                (grad,) = torch.autograd.grad(target, x, retain_graph=True, allow_unused=True)
                grad = torch.zeros_like(x) if grad is None else grad
                result[r][node] = (grad[: len(seeds[node])], pos, act)
    if any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules()):
        assert calls["relu"] > 0, "the rule patch was not used"
    return result[rule] if isinstance(rule, str) else result


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on 2 shared cores, OpenMP threads that spin against other
    processes make float64 (depthwise) convolutions up to 500x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nonzero_positions(model: nn.Module, images: torch.Tensor, node: str, features):
    """Per seed ``s``, the last position (row-major) where channel ``features[s]`` of image
    ``s`` at ``node`` is not zero (a seed there has something to project)."""
    with torch.no_grad():
        out = extractor(model, (node,))(images)[node]
    pos = []
    for s, f in enumerate(features):
        flat = (out[s, f].reshape(-1) != 0).nonzero().view(-1)
        where = int(flat[-1]) if flat.numel() else 0
        pos.append(divmod(where, out.shape[-1]))
    return torch.tensor(pos)


def zoo_graph(name: str, positive: bool = False):
    """The :class:`~deconvviz.engine.net.graph.Graph` of :func:`zoo_model` at its test size."""
    return _zoo_graph(name, bool(positive))


@functools.lru_cache(maxsize=None)
def _zoo_graph(name: str, positive: bool):
    from deconvviz.engine.net.graph import build_graph

    size = zoo_size(name)
    return build_graph(zoo_model(name, positive), (size, size))
