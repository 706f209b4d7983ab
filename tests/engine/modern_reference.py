"""An independent float64 reference for the deconvnet on modern CNNs (issue 19), written
without the engine: autograd on the model traced by torch.fx, every op run by a
:class:`torch.fx.Interpreter` that applies the contract's rules as autograd sees them.

The rules (the contract of issue 19, as this reference states them):

* **Elementwise nonlinearities** φ (ReLU, ReLU6/Hardtanh, SiLU, GELU, Hardswish, Mish,
  ELU, CELU, SELU, LeakyReLU, PReLU, Softplus; modules, functions or tensor methods) go
  back by the rule: ``deconvnet`` ``relu(g)`` whatever φ is; ``gradient`` ``φ'(x) * g``
  (autograd's own derivative, evaluated at the forward input); ``guided``
  ``relu(g) * relu(φ'(x))``: the deconvnet's rectified signal times the local slope
  where that slope is positive. For ReLU it is ``relu(g) * (x > 0)``; the signal it
  sends back is never negative, as guided backprop's is (a slope that turns negative,
  as SiLU's, GELU's and Mish's do below zero, stops the signal instead of flipping it).
* **Gates**: the output of a sigmoid or hardsigmoid is held at its forward value
  (detached), so a product ``x * gate`` goes back through ``x`` only. A gate must reach
  only products (through reshapes); ``x * sigmoid(x)`` (SiLU written out) is refused.
* **Normalisations with per-image statistics** (LayerNorm, torchvision's and timm's
  LayerNorm2d, GroupNorm, InstanceNorm): written here from their definition with the
  mean and variance detached, so the op is the affine map it was for that image.
* Everything else that carries signal must be linear in it, where autograd's backward is
  the transpose: convolutions, linear layers, batch norm in eval, pools (max pool by its
  switches, or ``unpool="nearest"``: a sum over its window), adds, products with a
  constant or a parameter (layer scale), concatenation, reshapes, permutes, channel
  shuffle, means, dropout in eval. Any other op (a product of two signals, softmax,
  attention) raises :class:`Unsupported` naming the node and the op.

:func:`modern_reference` has the interface of :func:`graph_reference.reference`, and
:data:`MODERN_ZOO` builds the random-weight networks of issue 19 (64-96 px).

Not a conftest: imported by name.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import re
from typing import Callable, Dict, Optional

import pytest
import torch
import torch.nn.functional as F
import torchvision
from graph_reference import randomize
from torch import fx, nn
from torchvision.models.feature_extraction import NodePathTracer

__all__ = [
    "Unsupported",
    "RuleTrace",
    "rule_trace",
    "modern_reference",
    "MODERN_ZOO",
    "modern_model",
    "modern_size",
    "RULES",
]

RULES = ("deconvnet", "guided", "gradient")


class Unsupported(RuntimeError):
    """The reference has no rule for an op that carries the signal."""


# ----------------------------------------------------------------------------- op tables

_NONLINEAR_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Softplus,
)
_NONLINEAR_FUNCTIONS: Dict[Callable, Callable] = {
    F.relu: F.relu,
    torch.relu: torch.relu,
    F.relu_: torch.relu,
    torch.relu_: torch.relu,
    F.relu6: F.relu6,
    F.hardtanh: F.hardtanh,
    F.hardtanh_: F.hardtanh,
    F.silu: F.silu,
    F.gelu: F.gelu,
    F.hardswish: F.hardswish,
    F.mish: F.mish,
    F.elu: F.elu,
    F.elu_: F.elu,
    F.celu: F.celu,
    F.selu: F.selu,
    F.leaky_relu: F.leaky_relu,
    F.leaky_relu_: F.leaky_relu,
    F.prelu: F.prelu,
    F.softplus: F.softplus,
}
_NONLINEAR_METHODS = {"relu": torch.relu, "relu_": torch.relu}
_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_GATE_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
_GATE_METHODS = {"sigmoid", "sigmoid_"}
_PRODUCTS = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_PRODUCT_METHODS = {"mul", "mul_", "div", "div_"}
# Ops that are linear in their signal operand (autograd's backward is their transpose).
_LINEAR_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad2d,
    nn.ChannelShuffle,
    torchvision.ops.FrozenBatchNorm2d,
)
_LINEAR_FUNCTIONS = {
    F.conv2d,
    F.linear,
    F.max_pool2d,
    torch.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.pad,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.cat,
    torch.concat,
    torch.chunk,
    torch.split,
    torch.mean,
    torch.sum,
    torch.squeeze,
    torch.unsqueeze,
    torch.add,
    torch.sub,
    torch.neg,
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.neg,
    operator.getitem,
    torch.narrow,
    torch.channel_shuffle,
}
_LINEAR_METHODS = {
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "contiguous",
    "expand",
    "expand_as",
    "mean",
    "sum",
    "chunk",
    "split",
    "squeeze",
    "unsqueeze",
    "add",
    "add_",
    "sub",
    "neg",
    "narrow",
    "__getitem__",
}
_RESHAPES = {
    "view",
    "reshape",
    "flatten",
    "expand",
    "expand_as",
    "squeeze",
    "unsqueeze",
    "permute",
    "transpose",
    "contiguous",
    torch.reshape,
    torch.flatten,
    torch.squeeze,
    torch.unsqueeze,
    torch.permute,
    torch.transpose,
}
# Dropout-like functions -> where their ``training`` argument is.
_DROPOUTS = {F.dropout: 2, F.dropout2d: 2, torchvision.ops.stochastic_depth: 3}
# Ops on a tensor's size and shape: no signal in what they return.
_METADATA = {getattr, operator.eq, torch._assert, len, "size", "dim"}
_OUT_OF_PLACE = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
_METHOD_OUT_OF_PLACE = {"add_": "add", "mul_": "mul", "div_": "div", "sigmoid_": "sigmoid"}


# ----------------------------------------------------------------------------- the rules


class _Rule(torch.autograd.Function):
    """``phi(x)`` going back by ``state["rule"]`` (read at backward time, so one forward
    pass serves every rule)."""

    @staticmethod
    def forward(ctx, x, phi, state):
        ctx.phi, ctx.state = phi, state
        ctx.save_for_backward(x)
        return phi(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        rule = ctx.state["rule"]
        if rule == "deconvnet":
            return g.clamp(min=0), None, None
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(ctx.phi(xd).sum(), xd)  # φ is elementwise
        if rule == "gradient":
            return g * slope, None, None
        if rule == "guided":
            return g.clamp(min=0) * slope.clamp(min=0), None, None
        raise ValueError(f"unknown rule {rule!r}")


def _out_of_place_module(m: nn.Module) -> nn.Module:
    if getattr(m, "inplace", False):
        m = copy.copy(m)
        m.inplace = False
    return m


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last ``len(normalized_shape)`` dims, its statistics detached."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    mean = x.detach().mean(dims, keepdim=True)
    var = x.detach().var(dims, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def _per_channel(t, x):
    return t.view((1, -1) + (1,) * (x.dim() - 2))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm, its statistics (per image and group) detached."""
    g = x.reshape(x.shape[0], num_groups, -1)
    mean = g.detach().mean(-1, keepdim=True)
    var = g.detach().var(-1, unbiased=False, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    y = y * _per_channel(weight, x) if weight is not None else y
    return y + _per_channel(bias, x) if bias is not None else y


def instance_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    """InstanceNorm with per-image statistics detached (with running statistics in eval
    it is a batch norm, affine already)."""
    if not use_input_stats:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
    return group_norm(x, x.shape[1], weight, bias, eps)


_NORM_FUNCTIONS = {
    F.layer_norm: layer_norm,
    F.group_norm: group_norm,
    F.instance_norm: instance_norm,
}


def _norm_module(m: nn.Module):
    if type(m) is nn.LayerNorm:
        return lambda x: layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)
    if type(m) is nn.GroupNorm:
        return lambda x: group_norm(x, m.num_groups, m.weight, m.bias, m.eps)
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return lambda x: instance_norm(
            x,
            m.running_mean,
            m.running_var,
            m.weight,
            m.bias,
            m.training or not m.track_running_stats,
            m.momentum,
            m.eps,
        )
    return None


def _sum_pool_max(value_fn, x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """The max pool's value, the gradient of a sum over each window (``unpool="nearest"``)."""
    value = value_fn(x)
    total = F.avg_pool2d(
        x,
        kernel_size,
        stride if stride is not None else kernel_size,
        padding,
        ceil_mode=ceil_mode,
        count_include_pad=True,
        divisor_override=1,
    )
    return value.detach() + (total - total.detach())


# ----------------------------------------------------------------------------- tracing


class _Tracer(NodePathTracer):
    """torchvision's node naming with torch.fx's default leaves (only ``torch.nn``'s
    modules): every composite module (torchvision's ``SqueezeExcitation``, ``LayerNorm2d``,
    ``Conv2dNormActivation``; timm's blocks) is traced through to its ops. Records each
    module call's output, so a node that another tracer keeps whole can be seeded."""

    def __init__(self):
        super().__init__(autowrap_modules=(math,))
        self.module_outputs: Dict[str, list] = {}

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        if isinstance(out, fx.Proxy):
            self.module_outputs.setdefault(self.path_of_module(m), []).append(out.node)
        return out


class RuleTrace:
    """A model traced for the reference: its :class:`torch.fx.GraphModule` and the fx
    node of every name (torchvision's node names, and each module's path for its output;
    ``path_k`` for its ``k``-th call)."""

    def __init__(self, model: nn.Module):
        if any(m.training for m in model.modules()):
            raise ValueError("the reference runs a model in eval mode; call model.eval()")
        tracer = _Tracer()
        graph = tracer.trace(model)
        self.module = fx.GraphModule(model, graph)
        self.names = {
            tracer.node_to_qualname[n]: n for n in graph.nodes if n in tracer.node_to_qualname
        }
        self.module_outputs = tracer.module_outputs

    def node(self, name: str) -> fx.Node:
        """The fx node whose value is ``name``'s output."""
        if name in self.names:
            return self.names[name]
        outs = self.module_outputs.get(name)
        if outs:
            return outs[0]
        m = re.fullmatch(r"(.*)_(\d+)", name)
        if m and len(self.module_outputs.get(m.group(1), ())) > int(m.group(2)):
            return self.module_outputs[m.group(1)][int(m.group(2))]
        raise KeyError(f"no node or module {name!r} in the traced model")


@functools.lru_cache(maxsize=None)
def rule_trace(model: nn.Module) -> RuleTrace:
    """:class:`RuleTrace` of ``model`` (made once per model)."""
    return RuleTrace(model)


class _RuleInterpreter(fx.Interpreter):
    """Runs the traced model with the rules; keeps the values of ``keep``."""

    def __init__(self, module, state, unpool, keep):
        super().__init__(module, garbage_collect_values=False)
        self.state, self.unpool, self.keep = state, unpool, set(keep)
        self.signal: Dict[fx.Node, bool] = {}
        self.gates: set = set()
        self.kept: Dict[fx.Node, torch.Tensor] = {}
        self.placeholders = 0

    def run_node(self, n):
        value = self._run(n)
        if n in self.keep:
            self.kept[n] = value
        return value

    def _run(self, n):
        if n.op == "placeholder":
            self.signal[n] = self.placeholders == 0
            self.placeholders += 1
            return super().run_node(n)
        self.signal[n] = any(self.signal.get(a, False) for a in n.all_input_nodes)
        if n.op in ("get_attr", "output"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op != "call_module" and n.target in _METADATA:
            self.signal[n] = False
        return self._apply(n, args, kwargs) if self.signal[n] else self._native(n, args, kwargs)

    # -- ops that carry no signal, or are linear in it, run as the network wrote them
    def _native(self, n, args, kwargs):
        if "inplace" in kwargs:
            kwargs = dict(kwargs, inplace=False)
        if n.op == "call_module":
            m = self.fetch_attr(n.target)
            return _out_of_place_module(m)(*args, **kwargs)
        if n.op == "call_function":
            return _OUT_OF_PLACE.get(n.target, n.target)(*args, **kwargs)
        method = _METHOD_OUT_OF_PLACE.get(n.target, n.target)
        return getattr(args[0], method)(*args[1:], **kwargs)

    def _unsupported(self, n, what):
        raise Unsupported(
            f"node {n.name!r} ({what}) carries the signal and the reference has no rule for it"
        )

    def _apply(self, n, args, kwargs):
        x = args[0] if args else None
        if n.op == "call_module":
            m = self.fetch_attr(n.target)
            what = type(m).__name__
            if isinstance(m, _NONLINEAR_MODULES):
                return _Rule.apply(x, _out_of_place_module(m), self.state)
            if isinstance(m, _GATE_MODULES):
                return self._gate(n, m(x))
            norm = _norm_module(m)
            if norm is not None:
                return norm(x)
            if isinstance(m, (nn.MaxPool2d,)) and self.unpool == "nearest":
                return _sum_pool_max(m, x, m.kernel_size, m.stride, m.padding, m.ceil_mode)
            if type(m) in _LINEAR_MODULES:
                return self._native(n, args, kwargs)
            self._unsupported(n, what)
        if n.op == "call_function":
            f = n.target
            what = getattr(f, "__name__", str(f))
            if f in _NONLINEAR_FUNCTIONS:
                phi_f, rest = _NONLINEAR_FUNCTIONS[f], dict(kwargs)
                rest.pop("inplace", None)
                extra = args[1:]
                return _Rule.apply(x, lambda t: phi_f(t, *extra, **rest), self.state)
            if f in _GATE_FUNCTIONS:
                return self._gate(n, f(x))
            if f in _NORM_FUNCTIONS:
                return _NORM_FUNCTIONS[f](*args, **kwargs)
            if f is F.batch_norm:
                training = kwargs.get("training", args[5] if len(args) > 5 else False)
                if training:
                    self._unsupported(n, "batch_norm in training mode")
                return self._native(n, args, kwargs)
            if f in _DROPOUTS:  # the identity in eval
                where = _DROPOUTS[f]
                if kwargs.get("training", args[where] if len(args) > where else True):
                    self._unsupported(n, f"{what} in training mode")
                return self._native(n, args, kwargs)
            if f in (F.max_pool2d, torch.max_pool2d) and self.unpool == "nearest":
                p = dict(
                    zip(("kernel_size", "stride", "padding", "dilation", "ceil_mode"), args[1:]),
                    **kwargs,
                )
                return _sum_pool_max(
                    lambda t: f(*((t,) + tuple(args[1:])), **kwargs),
                    x,
                    p["kernel_size"],
                    p.get("stride"),
                    p.get("padding", 0),
                    p.get("ceil_mode", False),
                )
            if f in _PRODUCTS:
                return self._product(n, args, kwargs)
            if f in _LINEAR_FUNCTIONS:
                return self._native(n, args, kwargs)
            self._unsupported(n, what)
        method = n.target
        if method in _NONLINEAR_METHODS:
            return _Rule.apply(x, _NONLINEAR_METHODS[method], self.state)
        if method in _GATE_METHODS:
            return self._gate(n, torch.sigmoid(x))
        if method in _PRODUCT_METHODS:
            return self._product(n, args, kwargs)
        if method in _LINEAR_METHODS:
            return self._native(n, args, kwargs)
        self._unsupported(n, f"Tensor.{method}")

    def _gate(self, n, value):
        """A gate's value, held: it must reach only products, and not multiply its own input."""
        source = n.all_input_nodes[0]

        def check(node):
            for user in node.users:
                if user.target in _RESHAPES:
                    check(user)
                elif user.target in _PRODUCTS or user.target in _PRODUCT_METHODS:
                    others = [a for a in user.all_input_nodes if a is not node]
                    if source in others:
                        raise Unsupported(
                            f"node {user.name!r} multiplies {source.name!r} by its "
                            "own sigmoid (SiLU written out); the reference treats "
                            "only other products as gates"
                        )
                else:
                    raise Unsupported(
                        f"gate {n.name!r} reaches {user.name!r} ({user.target}), not only products"
                    )

        check(n)
        self.signal[n] = False
        return value.detach()

    def _product(self, n, args, kwargs):
        carrying = [a for a in n.all_input_nodes if self.signal.get(a, False)]
        if len(carrying) > 1:
            self._unsupported(
                n, f"product of two signals {carrying[0].name!r} and {carrying[1].name!r}"
            )
        if n.target in _PRODUCT_METHODS:
            return getattr(args[0], _METHOD_OUT_OF_PLACE.get(n.target, n.target))(
                *args[1:], **kwargs
            )
        return _OUT_OF_PLACE.get(n.target, n.target)(*args, **kwargs)


def rule_forward(
    model: nn.Module, images: torch.Tensor, names, state: dict, unpool: str = "switches"
):
    """``(output, {name: value})``: the model run with the rules (``state["rule"]`` is
    read at backward time), with the values of the nodes ``names``."""
    rt = rule_trace(model)
    nodes = {name: rt.node(name) for name in names}
    interp = _RuleInterpreter(rt.module, state, unpool, nodes.values())
    try:
        out = interp.run(images)
    except Unsupported as exc:  # without the lines torch.fx's Interpreter adds
        raise Unsupported(str(exc).splitlines()[0]) from None
    return out, {name: interp.kept[node] for name, node in nodes.items()}


def modern_reference(
    model: nn.Module,
    images: torch.Tensor,
    seeds: dict,
    rule,
    mode: str = "max",
    unpool: str = "switches",
    positions: Optional[dict] = None,
):
    """The projections of many seeds by autograd with the rules of this module; the
    interface and the result of :func:`graph_reference.reference`: seed ``s`` of a node
    is channel ``seeds[node][s]`` of image ``s``, its target ``v * v.detach()`` for the
    seeded value ``v`` (the strongest, first in row-major order, or at
    ``positions[node][s]``) or the sum of that over the map (``mode="map"``). Returns
    ``{node: (grads (S, C, H, W), positions (S, 2), activation (S,))}`` (a tuple of
    rules: ``{rule: that}``, from one forward pass)."""
    rules = (rule,) if isinstance(rule, str) else tuple(rule)
    state = {"rule": rules[0]}
    x = images.clone().requires_grad_(True)
    _, outs = rule_forward(model, x, tuple(seeds), state, unpool)
    targets = {}
    for node, features in seeds.items():
        out = outs[node]
        target, pos, act = out.new_zeros(()), [], []
        for s, f in enumerate(features):
            fmap = out[s, f] if out.dim() == 4 else out[s, f].view(1, 1)
            if positions is not None and mode != "map":
                r, c = (int(v) for v in positions[node][s])
            else:
                r, c = divmod(int(fmap.detach().reshape(-1).argmax()), fmap.shape[1])
            pos.append((r, c))
            act.append(float(fmap[r, c].detach()))
            v = fmap if mode == "map" else fmap[r, c]
            target = target + (v * v.detach()).sum()
        targets[node] = (target, torch.tensor(pos), torch.tensor(act, dtype=torch.float64))
    result = {r: {} for r in rules}
    for r in rules:
        state["rule"] = r
        for node, (target, pos, act) in targets.items():
            (grad,) = torch.autograd.grad(target, x, retain_graph=True, allow_unused=True)
            grad = torch.zeros_like(x) if grad is None else grad
            result[r][node] = (grad[: len(seeds[node])], pos, act)
    return result[rule] if isinstance(rule, str) else result


# ----------------------------------------------------------------------------- the networks


def _tv(name, **kwargs):
    return lambda: torchvision.models.get_model(name, num_classes=10, **kwargs)


def _timm(name):
    def make():
        timm = pytest.importorskip(
            "timm", reason="timm's networks need the extra: pip install -e '.[timm]'"
        )
        return timm.create_model(name, num_classes=10)

    return make


#: The networks of issue 19 (name -> (factory, input size)), random weights.
MODERN_ZOO = {
    "tv_efficientnet_b0": (_tv("efficientnet_b0"), 64),
    "tv_mobilenet_v3_large": (_tv("mobilenet_v3_large"), 64),
    "tv_convnext_tiny": (_tv("convnext_tiny"), 64),
    "tv_regnet_y_400mf": (_tv("regnet_y_400mf"), 64),
    "tv_shufflenet_v2": (_tv("shufflenet_v2_x1_0"), 64),
    "timm_resnet50": (_timm("resnet50"), 64),
    "timm_efficientnet_b0": (_timm("efficientnet_b0"), 80),
    "timm_convnext_atto": (_timm("convnext_atto"), 96),
    "timm_mobilenetv3_small_100": (_timm("mobilenetv3_small_100"), 96),
}


def randomize_modern(model: nn.Module, seed: int) -> nn.Module:
    """:func:`graph_reference.randomize` (convs, linears, batch norms), then every other
    parameter: norm scales near 1, biases near 0, anything else (layer scale, PReLU
    slopes) near 0.5, so that no branch is switched off by its initialisation (ConvNeXt's
    layer scale starts at 1e-6)."""
    randomize(model, seed)
    covered = set()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            covered.update(id(p) for p in m.parameters(recurse=False))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in covered:
                continue
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.5 + 0.1 * noise)
    return model


def modern_model(name: str) -> nn.Module:
    """A float64 eval-mode network of :data:`MODERN_ZOO` with random weights (built once)."""
    return _modern_model(name)


@functools.lru_cache(maxsize=None)
def _modern_model(name: str) -> nn.Module:
    make, _ = MODERN_ZOO[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make()
    model = model.double().eval()
    return randomize_modern(model, seed=sum(map(ord, name)))


def modern_size(name: str) -> int:
    return MODERN_ZOO[name][1]
