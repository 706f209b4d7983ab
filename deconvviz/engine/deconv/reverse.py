"""The deconvnet's way down a graph: one transpose per op (Zeiler & Fergus, arXiv 1311.2901, 2.1).

:func:`reverse_walk` sends a signal from a seed node back to the input, visiting
the seed's ancestors in reverse execution order; a node's signal is the sum of
what its consumers send it (a residual input, a tensor concatenated several
times). Each op goes back through its own rule, one function per op in
:data:`TRANSPOSES` (the table a new op is added to, with its ``REACH`` in
:mod:`..net.ops`):

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

**Windows.** Every signal lives on its node's frame (:class:`~.graph_geometry.Frame`):
the whole map, or each seed's window of its cone. A spatial rule answers with
the frame its signal covers (a convolution's or pool's the input window its
output window reads), and the walk shifts it onto the input's frame and zeroes
it outside the map (where the whole pass crops the padding away). On whole
frames this is the plain transpose; on a seed's cone the same sums, skipping
only the zeros outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ...errors import DeconvvizError
from ..net.geometry import Frame, window_frame
from ..net.graph import Graph, GraphNode
from ..net.ops import split_sizes
from ..net.run import bn_scale, fetch_attr, norm_weight, op_weight
from . import record
from .record import (
    GraphRecording,
    avg_counts,
    channels_last,
    constant_value,
    cut_record,
    fill_outside,
)

__all__ = ["Walk", "TRANSPOSES", "POINT_OPS", "reverse_walk", "point_walk"]


@dataclass
class Walk:
    """One reverse pass: the graph, the recording, seed ``s``'s recorded row ``rows[s]``,
    its position ``position[s]`` on the seed node, and every node's ``frames``."""

    graph: Graph
    rec: GraphRecording
    rows: torch.Tensor
    position: torch.Tensor
    frames: Dict[str, Frame]
    rule: str
    unpool: str
    _origins: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: convs whose batch norm's scale goes back inside their transposed conv (see _batchnorm)
    folded: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: each conv's weight as its transpose uses it (batch norm folded in), shared by the walks
    #: of one projection's chunks
    weights: Dict[Tuple[str, torch.dtype], torch.Tensor] = field(default_factory=dict, repr=False)
    #: whether the signal the current op goes back through is the walk's own to overwrite
    mine: bool = False

    def part(self, seeds: slice) -> "Walk":
        """The same walk for a group of its seeds (weights and folds shared)."""
        return Walk(
            self.graph,
            self.rec,
            self.rows[seeds],
            self.position[seeds],
            self.frames,
            self.rule,
            self.unpool,
            folded=self.folded,
            weights=self.weights,
        )

    def conv_weight(self, node: GraphNode, dtype: torch.dtype) -> torch.Tensor:
        key = (node.name, dtype)
        if key not in self.weights:
            weight = op_weight(node.spec, self.graph.model).to(dtype)
            if node.name in self.folded:
                weight = weight * self.folded[node.name].to(dtype).view(-1, 1, 1, 1)
            self.weights[key] = weight
        return self.weights[key]

    def frame(self, name: str) -> Optional[Frame]:
        return self.frames.get(name)

    def origin(self, name: str) -> torch.Tensor:
        if name not in self._origins:
            self._origins[name] = self.frames[name].origin(self.position)
        return self._origins[name]

    def record(self, records: Dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """A record of node ``name``, one row per seed, on the walk's frame of it."""
        f = self.frame(name)
        if f is not None and not f.whole and self.graph.channels_last(name):
            # (R, H, W, C): cut its rows and columns as those of an (R, C, H, W) view
            t = {name: records[name].permute(0, 3, 1, 2)}
            return cut_record(self.rec, t, name, self.rows, f, self.origin(name)).permute(
                0, 2, 3, 1
            )
        return cut_record(
            self.rec, records, name, self.rows, f, None if f is None else self.origin(name)
        )

    def window(self, name: str) -> Optional[Frame]:
        """Node ``name``'s frame where the walk is inside seeds' cones, else None."""
        f = self.frame(name)
        return None if f is None or f.whole else f

    def shape(self, name: str, signal: torch.Tensor) -> Tuple[int, ...]:
        return (signal.shape[0],) + tuple(self.rec.shapes[name])

    def extent(self, name: str) -> Tuple[int, int]:
        return tuple(self.rec.shapes[name][-2:])


Sent = List[Tuple[Optional[str], torch.Tensor, Optional[Frame]]]
Transpose = Callable[[GraphNode, torch.Tensor, Walk], Sent]


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


def _by_rule(rule: str, g: torch.Tensor, slope, inplace: bool = False) -> torch.Tensor:
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
    out = _by_rule(w.rule, g, lambda: w.record(w.rec.masks, node.name), w.mine)
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


def _bn_scale(node: GraphNode, model) -> torch.Tensor:
    m = node.module
    if m is None:  # F.batch_norm: its buffers by name
        p = node.params
        scale = (fetch_attr(model, p["running_var"]) + p["eps"]).rsqrt()
        return scale * fetch_attr(model, p["weight"]) if p["weight"] is not None else scale
    return bn_scale(m)


def _batchnorm(node: GraphNode, g: torch.Tensor, w: Walk) -> Sent:
    scale = _bn_scale(node, w.graph.model)
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
        return [(x, g * p["factor"], f)]
    t = constant_value(w.graph, p["tensor"]).to(g.dtype)  # layer scale: a parameter
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


def _settle(walk: Walk, name: str, g: torch.Tensor) -> torch.Tensor:
    """Zero a node's gathered signal outside its map (the padding a whole pass crops), in
    place: a signal a window op sent is its own new tensor, or a sum the walk made."""
    f = walk.frame(name)
    if f is None or f.whole:
        return g
    return fill_outside(g, walk.origin(name), walk.extent(name))


def _add_window(
    walk: Walk,
    pending: Dict[str, torch.Tensor],
    owned: set,
    parent: str,
    sent: torch.Tensor,
    sent_frame: Frame,
    target: Frame,
) -> None:
    """Add ``sent`` (on ``sent_frame``) into ``parent``'s signal on its frame ``target``,
    in place where the walk owns that signal (no padded copy of ``sent``). Frames that
    move alike with the seed overlap alike for every seed (one slice); a seed's window
    onto a whole map lands at that seed's own place."""
    if parent not in owned:
        base = pending.get(parent)
        pending[parent] = (
            torch.empty(
                tuple(sent.shape[:-2]) + tuple(target.n),
                dtype=sent.dtype,
                device=sent.device,
                memory_format=torch.channels_last if sent.dim() == 4 else torch.contiguous_format,
            ).zero_()
            if base is None
            else base.clone()
        )
        owned.add(parent)
    acc = pending[parent]
    if sent_frame.j == target.j:
        shifts = [(slice(None), (sent_frame.a[0] - target.a[0], sent_frame.a[1] - target.a[1]))]
    else:
        d = (sent_frame.origin(walk.position) - target.origin(walk.position)).tolist()
        shifts = [(s, (dy, dx)) for s, (dy, dx) in enumerate(d)]
    for rows, d in shifts:
        # The part of the window that lies on the other.
        lo = [max(0, d[i]) for i in range(2)]
        hi = [min(target.n[i], d[i] + sent_frame.n[i]) for i in range(2)]
        if lo[0] >= hi[0] or lo[1] >= hi[1]:
            continue
        so = [lo[i] - d[i] for i in range(2)]
        acc[rows, ..., lo[0] : hi[0], lo[1] : hi[1]] += sent[
            rows, ..., so[0] : so[0] + hi[0] - lo[0], so[1] : so[1] + hi[1] - lo[1]
        ]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _signal_bytes(walk: Walk, order: List[GraphNode], elem: int) -> List[int]:
    """For each step of ``order``, the bytes of one seed's signal of that node."""
    sizes = []
    for n in order:
        if n.shape is None:
            sizes.append(0)
        else:
            channels, positions = walk.graph.map_size(n.name, walk.frame(n.name))
            sizes.append(channels * positions * elem)
    return sizes


def reverse_walk(walk: Walk, start: str, signal: torch.Tensor) -> torch.Tensor:
    """Send ``signal`` ``(S, ...)`` on node ``start``'s frame back to the input.

    Returns the input's signal on its frame: ``(S, C, H, W)`` for whole frames,
    each seed's window of the image otherwise (top-left ``walk.origin(input)``).
    Only the start node's ancestors are visited, each once, in reverse order;
    where the signals outgrow :data:`~.record.SIGNAL_BYTES` the seeds go on in groups.
    """
    order = list(reversed(walk.graph.ancestors([start])))
    sizes = _signal_bytes(walk, order, signal.element_size())
    # Pending signals no one else holds (an op's new tensor, a sum the walk made): the walk
    # may add into them, and the next op overwrite them, in place.
    return _walk_on(walk, order, sizes, 0, {start: signal}, set(), {start}, signal)


def _walk_on(
    walk: Walk,
    order: List[GraphNode],
    sizes: List[int],
    step: int,
    pending: Dict[str, torch.Tensor],
    owned: set,
    spread: set,  # nodes a window op sent signal to: it may lie in their padding
    signal: torch.Tensor,
) -> torch.Tensor:
    for i in range(step, len(order)):
        n = order[i]
        if n.name not in pending:
            continue
        seeds = walk.rows.numel()
        cap = record.SIGNAL_BYTES
        if seeds > 1 and seeds * sizes[i] > cap:
            group = max(1, cap // sizes[i])
            return torch.cat(
                [
                    _walk_on(
                        walk.part(slice(a, a + group)),
                        order,
                        sizes,
                        i,
                        {k: t[a : a + group] for k, t in pending.items()},
                        set(owned),
                        set(spread),
                        signal[a : a + group],
                    )
                    for a in range(0, seeds, group)
                ]
            )
        g = pending.pop(n.name)
        if n.name in spread:
            g = _settle(walk, n.name, g)
        if n.op == "input":
            return g
        rule_fn = TRANSPOSES.get(n.op)
        if rule_fn is None:
            raise DeconvvizError(f"{n.label()} has no deconvnet rule")
        walk.mine = n.name in owned
        sent_all = rule_fn(n, g, walk)
        walk.mine = False
        storages = [_storage(t) for _, t, _ in sent_all]
        for (parent, sent, sent_frame), at in zip(sent_all, storages):
            if parent is None:
                continue
            target = walk.frame(parent)
            if sent_frame is not None and sent_frame is not walk.frame(n.name):
                spread.add(parent)
            if sent_frame is not None and target is not None and sent_frame != target:
                _add_window(walk, pending, owned, parent, sent, sent_frame, target)
            elif parent not in pending:
                pending[parent] = sent
                # Its own if no other parent got the same memory, and it is not the
                # signal's (or the signal was the walk's own).
                if storages.count(at) == 1 and (at != _storage(g) or n.name in owned):
                    owned.add(parent)
            elif parent in owned:
                pending[parent] += sent
            else:
                pending[parent] = pending[parent] + sent
                owned.add(parent)
    first = walk.graph.nodes[0]
    f = walk.frame(first.name)
    shape = tuple(walk.rec.shapes.get(first.name) or first.shape)
    if f is not None:
        shape = shape[:1] + tuple(f.n)
    return signal.new_zeros((signal.shape[0],) + shape)


def _stamp(
    walk: Walk,
    conv: GraphNode,
    channel: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    value: torch.Tensor,
) -> torch.Tensor:
    """The transposed conv of one-value seeds on the conv input's frame: seed ``s``
    stamps ``value[s] * W[channel[s]]`` with kernel tap ``(ky, kx)`` landing on row
    ``y * stride - padding + ky * dilation`` (and likewise for columns)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = walk.graph.window_params(conv)
    (parent,) = conv.inputs
    weight = op_weight(conv.spec, walk.graph.model)
    out_ch, in_g = weight.shape[:2]
    c_in = walk.rec.shapes[parent][0]
    f = walk.frame(parent)
    s, dev = channel.shape[0], value.device
    oy, ox = walk.origin(parent)[:, 0], walk.origin(parent)[:, 1]
    # A canvas with a margin on every side holds every tap; the frame is cut out of it after.
    my, mx = max(ph, 0), max(pw, 0)
    hc, wc = f.n[0] + my + dh * (kh - 1) + sh + 1, f.n[1] + mx + dw * (kw - 1) + sw + 1
    taps = (
        (torch.arange(kh, device=dev) * dh).view(kh, 1) * wc
        + (torch.arange(kw, device=dev) * dw).view(1, kw)
    ).view(-1)
    top = (y * sh - ph - oy + my) * wc + (x * sw - pw - ox + mx)
    where = top.view(s, 1, 1) + taps.view(1, 1, -1)
    stamps = weight.index_select(0, channel).to(value.dtype) * value.view(-1, 1, 1, 1)
    canvas = value.new_zeros((s, in_g, hc * wc))
    canvas.scatter_add_(2, where.expand(s, in_g, kh * kw), stamps.reshape(s, in_g, kh * kw))
    image = canvas.view(s, in_g, hc, wc)[:, :, my : my + f.n[0], mx : mx + f.n[1]]
    if in_g == c_in:
        return image.contiguous()
    groups = conv.params["groups"]
    out = value.new_zeros((s, groups, in_g) + tuple(f.n))
    out[torch.arange(s, device=dev), channel // (out_ch // groups)] = image
    return out.view((s, c_in) + tuple(f.n))


#: Ops a one-value seed passes as one value (to the conv below it, where it becomes a stamp).
POINT_OPS = (
    "relu",
    "relu6",
    "nonlinear",
    "gate",
    "norm",
    "maxpool",
    "adaptive_maxpool",
    "batchnorm",
    "dropout",
    "identity",
    "scale",
)


def _at(
    walk: Walk,
    records: Dict[str, torch.Tensor],
    name: str,
    channel: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
) -> torch.Tensor:
    """A record's value for each seed at map position ``(y, x)``."""
    rows = walk.rows
    here = walk.rec.origin(name)
    if here is not None:
        here = here.index_select(0, rows)
        y, x = y - here[:, 0], x - here[:, 1]
    t = records[name]
    # A record in the shape of its statistics (a norm's) has size 1 where it is the same.
    c, y, x = (
        i if t.shape[d] > 1 else torch.zeros_like(i) for d, i in ((1, channel), (2, y), (3, x))
    )
    return t[rows, c, y, x]


def point_walk(
    walk: Walk, node: str, channel: torch.Tensor, value: torch.Tensor
) -> Tuple[str, torch.Tensor]:
    """The first steps of :func:`reverse_walk` for seeds that are one value each, in closed form.

    Seed ``s`` is ``value[s]`` at channel ``channel[s]`` and ``walk.position[s]`` of
    node ``node``'s output ``(C, H, W)``. Down a chain of single-input ops it stays
    one value: a ReLU rectifies it, a max pool (with switches) moves it to its
    switch, a batch norm scales it; the first convolution stamps its filter
    (:func:`_stamp`). That skips the ``S x C x H x W`` signals and the full
    transposed conv that dominate the cost of many seeds on a wide layer.
    Returns ``(name, signal)``: the node whose output ``signal`` (on its frame) is,
    for :func:`reverse_walk` to take on. Equal to the plain walk.
    """
    y, x, v = walk.position[:, 0].clone(), walk.position[:, 1].clone(), value.clone()
    n = walk.graph.node(node)
    rule = walk.rule
    while True:
        if n.op in ("relu", "relu6", "nonlinear"):
            v = _by_rule(rule, v, partial(_at, walk, walk.rec.masks, n.name, channel, y, x))
        elif n.op == "gate" and walk.rec.held[n.name].shape[-2:] == (1, 1):
            held = walk.rec.held[n.name]
            c = channel if held.shape[1] > 1 else torch.zeros_like(channel)
            v = v * held[walk.rows.to(held.device), c, 0, 0].to(v.dtype)
        elif (
            n.op == "norm"
            and walk.rec.held[n.name].dim() == 4
            and not walk.graph.channels_last(n.name)
        ):
            v = v * _at(walk, walk.rec.held, n.name, channel, y, x).to(v.dtype)
            weight = norm_weight(n.spec, walk.graph.model, 4)
            if weight is not None:
                c, h, wd = walk.rec.shapes[n.name]
                v = v * weight.expand(1, c, h, wd)[0, channel, y, x].to(v.dtype)
        elif (
            n.op in ("maxpool", "adaptive_maxpool")
            and walk.unpool == "switches"
            and walk.graph.window_params(n) is not None
        ):
            flat = _at(walk, walk.rec.switches, n.name, channel, y, x)
            w_in = walk.extent(n.inputs[0])[1]
            y, x = flat // w_in, flat % w_in
        elif n.op == "batchnorm":
            v = v * _bn_scale(n, walk.graph.model).to(v.dtype)[channel]
        elif n.op == "scale" and n.params["factor"] is not None:
            v = v * n.params["factor"]
        elif n.op == "conv":
            return n.inputs[0], _stamp(walk, n, channel, y, x, v)
        elif n.op not in ("dropout", "identity"):
            f = walk.frame(n.name)
            dense = v.new_zeros((v.shape[0], walk.rec.shapes[n.name][0]) + tuple(f.n))
            o = walk.origin(n.name)
            y, x = y - o[:, 0], x - o[:, 1]
            dense[torch.arange(v.shape[0], device=v.device), channel, y, x] = v
            return n.name, dense
        n = walk.graph.node(n.inputs[0])
