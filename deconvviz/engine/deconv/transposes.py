"""The deconvnet's rule for each op: its transpose (Zeiler & Fergus, arXiv 1311.2901, 2.1).

:data:`TRANSPOSES` maps each op kind to one function (the table a new op is added to,
with its ``REACH`` in :mod:`..net.ops`), which takes a node's signal and returns what
it sends to each input, on which frame (:mod:`.reverse` walks the graph with them):

* max pools **unpool**: ``switches`` puts each value where that image's max came
  from, ``nearest`` copies it to the whole window; overlapping windows are
  **summed**, as the gradient does;
* ReLU, ReLU6 and every elementwise nonlinearity φ (SiLU, GELU, Hardswish, Mish,
  ELU, LeakyReLU, PReLU, Softplus, ...) go back by the rule: ``deconvnet``
  ``relu(signal)`` whatever φ is (the paper's rule ignores the forward pass);
  ``gradient`` ``signal * φ'(x)``, as autograd does; ``guided``
  ``relu(signal) * relu(φ'(x))``, the deconvnet's rectified signal where the local
  slope is positive (a slope that turns negative, as SiLU's and GELU's do below
  zero, stops the signal rather than flipping it). For ReLU ``φ'(x)`` is the mask
  ``0 < y`` (ReLU6: ``0 < y < 6``), so ``guided`` is ``relu(signal) * mask``;
* **gates** (``x * sigmoid(s)``, ``x * hardsigmoid(s)``, squeeze-and-excitation):
  the gate is held at its forward value; the signal goes back through the gated
  input only, times the gate (the gate's branch takes no signal);
* **normalisations with per-image statistics** (LayerNorm, LayerNorm2d, GroupNorm,
  InstanceNorm): the statistics are held, so the op is the affine map it was for
  that image and goes back as its transpose, ``signal * weight / sqrt(var + eps)``
  (batch norm in eval is the case whose statistics are the running ones);
* convolutions **filter** with the transposed convolution sharing the conv's own
  weight (groups, stride, dilation, padding; no bias);
* every other op linear in eval mode goes back through its transpose: batch norm
  (its scale), add (the signal to both inputs), products with a constant (layer
  scale), cat (split), chunk/split (each piece back to its place), average and
  adaptive-average pools, flatten/view/reshape, permute (channel shuffle), mean,
  linear (``W^T``), dropout, stochastic depth and identity (unchanged).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ...errors import DeconvvizError
from ..net.geometry.frames import Frame, window_frame
from ..net.graph import GraphNode
from ..net.ops import split_sizes
from ..net.run import bn_scale, fetch_attr, norm_weight, op_weight
from .record import channels_last, constant_value
from .walk import Sent, Transpose, Walk
from .windows import avg_counts

__all__ = ["TRANSPOSES", "by_rule", "batchnorm_scale"]


def _crop(need: Frame, target: Optional[Frame], stride, dilation):
    """``(padding, output_padding)`` that cut a transposed conv's output on frame ``need``
    down to the input's frame ``target`` (the padding a whole pass drops, the part of a
    window outside the cone), or None where ``target`` is not inside ``need`` that way."""
    if target is None or target.j != need.j:
        return None
    pad, extra = [], []
    for i in range(2):
        left = target.a[i] - need.a[i]
        right = need.a[i] + need.n[i] - target.a[i] - target.n[i]
        if left < 0 or right < 0 or not 0 <= left - right < max(stride[i], dilation[i]):
            return None
        pad.append(left)
        extra.append(left - right)
    return tuple(pad), tuple(extra)


def _conv(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    kernel, stride, padding, dilation = w.graph.window_params(node)
    weight = w.conv_weight(node, g.dtype)
    (parent,) = node.inputs
    need = window_frame(w.frame(node.name), kernel, stride, padding, dilation)
    target = w.frame(parent)
    crop = _crop(need, target, stride, dilation)
    groups = node.params["groups"]
    phases = stride[0] * stride[1]
    if groups == 1 and tuple(dilation) == (1, 1) and 1 < phases and weight.shape[1] * phases <= 64:
        out = _by_phases(channels_last(g), weight, stride)
        if crop is None:
            return [(parent, out, need)]
        (top, left), n = crop[0], target.n
        return [(parent, out[..., top : top + n[0], left : left + n[1]], target)]
    if crop is None:
        out = F.conv_transpose2d(
            channels_last(g), weight, stride=stride, dilation=dilation, groups=groups
        )
        return [(parent, out, need)]
    # The transposed conv computes only the input's frame (no padded copy to cut down).
    out = F.conv_transpose2d(
        channels_last(g),
        weight,
        stride=stride,
        padding=crop[0],
        output_padding=crop[1],
        dilation=dilation,
        groups=groups,
    )
    return [(parent, out, target)]


def _by_phases(g: torch.Tensor, weight: torch.Tensor, stride) -> torch.Tensor:
    """``conv_transpose2d(g, weight, stride)`` as one convolution: output row ``q * s + p``
    (phase ``p``) sums ``g[q - m] * weight[p + s * m]``, a plain convolution with the taps of
    phase ``p``; the phases are stacked as output channels and interleaved after. The same
    sums; several times faster where the transposed conv has few output channels (an
    image's 3 below a strided stem), which the library's transposed kernel handles poorly."""
    c_out, c_in, kh, kw = weight.shape
    sy, sx = stride
    my, mx = -(-kh // sy), -(-kw // sx)
    stacked = weight.new_zeros((c_in, sy, sx, c_out, my, mx))
    for py in range(sy):
        for px in range(sx):
            taps = weight[:, :, py::sy, px::sx].transpose(0, 1)
            stacked[:, py, px, :, : taps.shape[2], : taps.shape[3]] = taps
    stacked = stacked.flip(-2, -1).reshape(c_in * sy * sx, c_out, my, mx)
    r = F.conv2d(g, stacked, padding=(my - 1, mx - 1))
    s, _, h, w = r.shape
    out = r.view(s, c_in, sy, sx, h, w).permute(0, 1, 4, 2, 5, 3).reshape(s, c_in, h * sy, w * sx)
    return out[:, :, : (g.shape[2] - 1) * sy + kh, : (g.shape[3] - 1) * sx + kw]


def by_rule(rule: str, g: torch.Tensor, slope, inplace: bool = False) -> torch.Tensor:
    """An elementwise nonlinearity's rule on signal ``g`` (``slope``: φ'(x), a callable
    giving it where the rule needs it; for ReLU the bool mask); ``inplace``: ``g`` may be
    overwritten."""
    if rule == "deconvnet":
        return g.clamp_(min=0) if inplace else g.clamp(min=0)
    s = slope()
    if rule == "gradient":
        return g * s
    return g.clamp(min=0) * (s if s.dtype == torch.bool else s.clamp(min=0))


def _rectify(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    out = by_rule(w.rule, g, lambda: w.record(w.rec.masks, node.name), w.mine)
    return [(node.inputs[0], out, w.frame(node.name))]


def _held(w: Walk, name: str) -> torch.Tensor:
    t = w.rec.held[name]
    if t.dim() == 4 and t.shape[-1] * t.shape[-2] == 1:
        return t.index_select(0, w.rows.to(t.device))  # one value per channel: no window
    return w.record(w.rec.held, name)


def _gate(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    (x,), f = node.inputs, w.frame(node.name)
    out = g * _held(w, node.name).to(g.dtype)
    if f is None or f.whole:
        out = _unbroadcast(out, w.shape(x, g))
    return [(x, out, f)]


def _norm(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    held = _held(w, node.name).to(g.dtype)
    out = g.mul_(held) if w.mine else g * held
    weight = norm_weight(node.spec, w.graph.model, g.dim())
    if weight is not None:
        out.mul_(weight.to(g.dtype))
    return [(node.inputs[0], out, w.frame(node.name))]


def _sum_pool_transpose(g: torch.Tensor, kernel, stride, dilation) -> torch.Tensor:
    c = g.shape[1]
    ones = g.new_ones((c, 1) + tuple(kernel))
    return F.conv_transpose2d(g, ones, stride=stride, dilation=dilation, groups=c)


def _pool(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    """Max pools (switches or nearest), average pools and adaptive pools of even windows."""
    window = w.graph.window_params(node)
    if window is None:
        return _adaptive(node, g, w)
    kernel, stride, padding, dilation = window
    (x,) = node.inputs
    need = window_frame(w.frame(node.name), kernel, stride, padding, dilation)
    if node.op in ("maxpool", "adaptive_maxpool") and w.unpool == "switches":
        s, c, h, wd = g.shape
        sw = w.record(w.rec.switches, node.name)
        origin = need.origin(w.position).to(sw.device)
        width = w.extent(x)[1]
        # The place in the window: flat - row * (W - n_w) - the window's start.
        local = sw.div(width, rounding_mode="floor").mul_(need.n[1] - width).add_(sw)
        local.sub_((origin[:, 0] * need.n[1] + origin[:, 1]).view(-1, 1, 1, 1))
        area = need.area()
        local.clamp_(0, area - 1)  # where the signal is zero, any place will do
        # Channels last, (S, h*w, C): views of channels-last tensors, and the result is one.
        out = g.new_zeros((s, area, c))
        # scatter_add sums values that share a switch (overlapping windows), deterministically.
        out.scatter_add_(
            1,
            local.permute(0, 2, 3, 1).reshape(s, h * wd, c),
            g.permute(0, 2, 3, 1).reshape(s, h * wd, c),
        )
        return [(x, out.view(s, need.n[0], need.n[1], c).permute(0, 3, 1, 2), need)]
    if node.op == "avgpool" and node.params["divisor_override"]:
        g = g / float(node.params["divisor_override"])
    elif node.op == "adaptive_avgpool":
        g = g / float(kernel[0] * kernel[1])
    elif node.op == "avgpool":
        origin = need.origin(w.position)
        counts = avg_counts(
            origin, need.n, w.extent(x), kernel, stride, padding, node.params["count_include_pad"]
        )
        g = g / counts.to(g.dtype)
    return [(x, _sum_pool_transpose(g, kernel, stride, dilation), need)]


def _adaptive_matrix(n_out: int, n_in: int, average: bool, like: torch.Tensor) -> torch.Tensor:
    """``(n_out, n_in)``: row ``i`` is the window ``[floor(i*n_in/n_out), ceil(...))``."""
    m = like.new_zeros((n_out, n_in))
    for i in range(n_out):
        a0, a1 = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a0:a1] = 1.0 / (a1 - a0) if average else 1.0
    return m


def _adaptive(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    """An adaptive pool of uneven windows (whole maps only)."""
    (x,) = node.inputs
    in_h, in_w = w.extent(x)
    if node.op == "adaptive_maxpool" and w.unpool == "switches":
        s, c, h, wd = g.shape
        out = g.new_zeros((s, c, in_h * in_w))
        sw = w.record(w.rec.switches, node.name)
        out.scatter_add_(2, sw.reshape(s, c, h * wd), g.reshape(s, c, h * wd))
        return [(x, out.view(s, c, in_h, in_w), None)]
    average = node.op == "adaptive_avgpool"
    ph = _adaptive_matrix(g.shape[-2], in_h, average, g)
    pw = _adaptive_matrix(g.shape[-1], in_w, average, g)
    # The pool is separable, y = Ph x Pw^T; its transpose is Ph^T g Pw.
    return [(x, torch.einsum("scij,ih,jw->schw", g, ph, pw), None)]


def batchnorm_scale(node: GraphNode, model) -> torch.Tensor:
    m = node.module
    if m is None:  # F.batch_norm: its buffers by name
        p = node.params
        scale = (fetch_attr(model, p["running_var"]) + p["eps"]).rsqrt()
        return scale * fetch_attr(model, p["weight"]) if p["weight"] is not None else scale
    return bn_scale(m)


def _batchnorm(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    scale = batchnorm_scale(node, w.graph.model)
    (x,) = node.inputs
    below = w.graph.node(x)
    if g.dim() == 4 and below.op == "conv" and len(below.fx_node.users) == 1:
        # The norm is all the conv's output feeds: its scale goes into the transposed
        # conv's weight (one pass over the signal fewer).
        w.folded[x] = scale
        return [(x, g, w.frame(node.name))]
    scale = scale.to(g.dtype).view((1, -1) + (1,) * (g.dim() - 2))
    return [(node.inputs[0], g.mul_(scale) if w.mine else g * scale, w.frame(node.name))]


def _unbroadcast(g: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    if tuple(g.shape) == tuple(shape):
        return g
    if g.dim() != len(shape):
        raise DeconvvizError(f"cannot send a {tuple(g.shape)} signal back to a {shape} input")
    dims = [d for d in range(1, g.dim()) if shape[d] == 1 and g.shape[d] != 1]
    return g.sum(dim=dims, keepdim=True) if dims else g


def _add(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    out, f = [], w.frame(node.name)
    for x, sign in zip(node.inputs, node.params["signs"]):
        if x is not None:
            sent = g if sign == 1.0 else g * sign
            if f is None or f.whole:
                sent = _unbroadcast(sent, w.shape(x, g))
            out.append((x, sent, f))
    return out


def _scale(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    p, f, (x,) = node.params, w.frame(node.name), node.inputs
    if p["factor"] is not None:
        return [(x, g.mul_(p["factor"]) if w.mine else g * p["factor"], f)]
    t = constant_value(w.graph, p["tensor"]).to(g.dtype)  # layer scale: a parameter
    if w.mine and torch.broadcast_shapes(g.shape, t.shape) == g.shape:
        out = g.div_(t) if p["divide"] else g.mul_(t)
    else:
        out = g / t if p["divide"] else g * t
    if f is None or f.whole:
        out = _unbroadcast(out, w.shape(x, g))
    return [(x, out, f)]


def _regrouped_shape(node: GraphNode, x: str, g: torch.Tensor, w: Walk) -> Tuple[int, ...]:
    """The shape of input ``x``'s signal for ``node``'s signal ``g``: on a window (a channel
    shuffle's regrouping, a piece cut along the channels) its map is the window's."""
    shape = w.shape(x, g)
    return shape[:-2] + tuple(g.shape[-2:]) if w.window(node.name) else shape


def _narrow(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    """A piece of chunk()/split(): back to its place in the whole, zeros elsewhere."""
    p, (x,) = node.params, node.inputs
    shape = _regrouped_shape(node, x, g, w)
    dim = p["dim"] % len(shape)
    sizes = split_sizes(shape[dim], p["how"])
    out = g.new_zeros(shape)
    out.narrow(dim, sum(sizes[: p["index"]]), sizes[p["index"]]).copy_(g)
    return [(x, out, w.window(node.name))]


def _cat(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    dim = node.params["dim"] % g.dim()
    if dim == 0:
        raise DeconvvizError(f"{node.label()} concatenates along the batch dimension")
    sizes = [w.rec.shapes[x][dim - 1] for x in node.inputs]
    f = w.frame(node.name) if dim == 1 else None  # a spatial cat goes back on whole maps
    return [(x, part, f) for x, part in zip(node.inputs, torch.split(g, sizes, dim=dim))]


def _reshape(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    (x,) = node.inputs
    return [(x, g.reshape(_regrouped_shape(node, x, g, w)), w.window(node.name))]


def _permute(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    p, (x,) = node.params, node.inputs
    if "dims" in p:
        dims = [d % g.dim() for d in p["dims"]]
        inverse = sorted(range(len(dims)), key=dims.__getitem__)
        return [(x, g.permute(inverse), w.window(node.name))]
    return [(x, g.transpose(p["dim0"], p["dim1"]), w.window(node.name))]


def _mean(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    (x,) = node.inputs
    shape = w.shape(x, g)
    dims = node.params["dim"]
    dims = sorted(d % len(shape) for d in dims) if dims is not None else []
    if not dims or 0 in dims:
        raise DeconvvizError(f"{node.label()} averages over the batch dimension")
    if not node.params["keepdim"]:
        for d in dims:
            g = g.unsqueeze(d)
    count = 1
    for d in dims:
        count *= shape[d]
    return [(x, g.expand(shape) / count, None)]


def _linear(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    return [
        (
            node.inputs[0],
            g.matmul(op_weight(node.spec, w.graph.model).to(g.dtype)),
            w.window(node.name),
        )
    ]


def _identity(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    return [(node.inputs[0], g, w.frame(node.name))]


#: The deconvnet's rule for each op kind (see the module docstring).
TRANSPOSES: Dict[str, Transpose] = {
    "conv": _conv,
    "relu": _rectify,
    "relu6": _rectify,
    "nonlinear": _rectify,
    "gate": _gate,
    "norm": _norm,
    "narrow": _narrow,
    "maxpool": _pool,
    "adaptive_maxpool": _pool,
    "adaptive_avgpool": _pool,
    "avgpool": _pool,
    "batchnorm": _batchnorm,
    "add": _add,
    "scale": _scale,
    "cat": _cat,
    "reshape": _reshape,
    "permute": _permute,
    "mean": _mean,
    "linear": _linear,
    "dropout": _identity,
    "identity": _identity,
}
