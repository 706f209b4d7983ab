"""The deconvnet's way down a graph: one transpose per op (Zeiler & Fergus, arXiv 1311.2901, 2.1).

:func:`reverse_walk` sends a signal from a seed node back to the input, visiting
the seed's ancestors in reverse execution order; a node's signal is the sum of
what its consumers send it (a residual input, a tensor concatenated several
times). Each op goes back through its own rule, one function per op in
:data:`TRANSPOSES`:

* max pools **unpool**: ``switches`` puts each value where that image's max came
  from, ``nearest`` copies it to the whole window; overlapping windows are
  **summed**, as the gradient does;
* ReLU and ReLU6 **rectify** by the rule: ``deconvnet`` ``relu(signal)``,
  ``guided`` ``relu(signal) * mask``, ``gradient`` ``signal * mask``, where the
  mask is ``0 < y`` for ReLU and ``0 < y < 6`` for ReLU6 (its gradient's support);
* convolutions **filter** with the transposed convolution sharing the conv's own
  weight (groups, stride, dilation, padding; no bias);
* every other op linear in eval mode goes back through its transpose: batch norm
  (its scale), add (the signal to both inputs), cat (split), average and
  adaptive-average pools, flatten/view/reshape, permute, mean, linear (``W^T``),
  dropout and identity (unchanged).

A windowed variant (issue 10) can replace entries of :data:`TRANSPOSES` one op
at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision

from ..errors import DeconvvizError
from .graph import Graph, GraphNode
from .graph_ops import op_weight

__all__ = ["GraphRecording", "Walk", "TRANSPOSES", "POINT_OPS", "reverse_walk", "point_walk"]

RULE_RELUS = ("relu", "relu6")


@dataclass
class GraphRecording:
    """What one recorded forward pass kept, for the nodes below its seed nodes.

    ``outputs[name]``: the seed nodes' outputs ``(B, ...)``; ``switches[name]``:
    every max pool's flat argmax indices into each input plane ``(B, C, h, w)``;
    ``masks[name]``: every ReLU's ``0 < y`` (ReLU6's ``0 < y < 6``) as bool
    ``(B, ...)``, when the rule needs them; ``shapes[name]``: each node's output
    shape for one image; ``batch``: B.
    """

    outputs: Dict[str, torch.Tensor]
    switches: Dict[str, torch.Tensor]
    masks: Dict[str, torch.Tensor]
    shapes: Dict[str, Tuple[int, ...]]
    batch: int


@dataclass
class Walk:
    """One reverse pass's context: the graph, the recording, and seed ``s``'s image ``index[s]``."""

    graph: Graph
    rec: GraphRecording
    index: torch.Tensor
    rule: str
    unpool: str

    def per_seed(self, recorded: torch.Tensor) -> torch.Tensor:
        return recorded.index_select(0, self.index)

    def shape(self, name: str, signal: torch.Tensor) -> Tuple[int, ...]:
        return (signal.shape[0],) + tuple(self.rec.shapes[name])


Transpose = Callable[[GraphNode, torch.Tensor, Walk], List[Tuple[Optional[str], torch.Tensor]]]


def _crop(full: torch.Tensor, pad: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """Cut a transposed window op's output (padded frame) down to the input's ``size``."""
    out = full[..., pad[0]:pad[0] + size[0], pad[1]:pad[1] + size[1]]
    short_h, short_w = size[0] - out.shape[-2], size[1] - out.shape[-1]
    if short_h > 0 or short_w > 0:
        out = F.pad(out, (0, max(0, short_w), 0, max(0, short_h)))
    return out


def _conv(node: GraphNode, g: torch.Tensor, w: Walk):
    p, (x,) = node.params, node.inputs
    # Channels-last runs the transposed conv about 1.5x faster on the CPU.
    g = g.contiguous(memory_format=torch.channels_last)
    full = F.conv_transpose2d(g, op_weight(node.spec, w.graph.model), stride=p["stride"],
                              dilation=p["dilation"], groups=p["groups"])
    return [(x, _crop(full, p["padding"], w.rec.shapes[x][-2:]))]


def _rectify(node: GraphNode, g: torch.Tensor, w: Walk):
    if w.rule == "deconvnet":
        out = g.clamp(min=0)
    else:
        mask = w.per_seed(w.rec.masks[node.name])
        out = (g.clamp(min=0) if w.rule == "guided" else g) * mask
    return [(node.inputs[0], out)]


def _scatter(g: torch.Tensor, switches: torch.Tensor, in_size: Tuple[int, int]) -> torch.Tensor:
    s, c, h, wd = g.shape
    out = g.new_zeros((s, c, in_size[0] * in_size[1]))
    # scatter_add sums values that share a switch (overlapping windows), deterministically.
    out.scatter_add_(2, switches.reshape(s, c, h * wd), g.reshape(s, c, h * wd))
    return out.view(s, c, in_size[0], in_size[1])


def _maxpool(node: GraphNode, g: torch.Tensor, w: Walk):
    p, (x,) = node.params, node.inputs
    in_size = w.rec.shapes[x][-2:]
    if w.unpool == "switches":
        return [(x, _scatter(g, w.per_seed(w.rec.switches[node.name]), in_size))]
    c = g.shape[1]
    ones = g.new_ones((c, 1) + tuple(p["kernel"]))
    full = F.conv_transpose2d(g, ones, stride=p["stride"], dilation=p["dilation"], groups=c)
    return [(x, _crop(full, p["padding"], in_size))]


def _adaptive_matrix(n_out: int, n_in: int, average: bool, like: torch.Tensor) -> torch.Tensor:
    """``(n_out, n_in)``: row ``i`` is the window ``[floor(i*n_in/n_out), ceil(...))``."""
    m = like.new_zeros((n_out, n_in))
    for i in range(n_out):
        a0, a1 = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a0:a1] = 1.0 / (a1 - a0) if average else 1.0
    return m


def _adaptive(node: GraphNode, g: torch.Tensor, w: Walk):
    (x,) = node.inputs
    in_h, in_w = w.rec.shapes[x][-2:]
    if node.op == "adaptive_maxpool" and w.unpool == "switches":
        return [(x, _scatter(g, w.per_seed(w.rec.switches[node.name]), (in_h, in_w)))]
    average = node.op == "adaptive_avgpool"
    ph = _adaptive_matrix(g.shape[-2], in_h, average, g)
    pw = _adaptive_matrix(g.shape[-1], in_w, average, g)
    # The pool is separable, y = Ph x Pw^T; its transpose is Ph^T g Pw.
    return [(x, torch.einsum("scij,ih,jw->schw", g, ph, pw))]


def _avg_divisor(n_out: int, n_in: int, k: int, s: int, p: int, include_pad: bool):
    out = []
    for i in range(n_out):
        start = i * s - p
        end = min(start + k, n_in + p)
        out.append(end - start if include_pad else min(start + k, n_in) - max(start, 0))
    return out


def _avgpool(node: GraphNode, g: torch.Tensor, w: Walk):
    p, (x,) = node.params, node.inputs
    in_size = w.rec.shapes[x][-2:]
    if p["divisor_override"]:
        g = g / float(p["divisor_override"])
    else:
        dh, dw = (g.new_tensor(_avg_divisor(g.shape[-2 + a], in_size[a], p["kernel"][a],
                                            p["stride"][a], p["padding"][a],
                                            p["count_include_pad"])) for a in range(2))
        g = g / (dh.view(-1, 1) * dw.view(1, -1))
    c = g.shape[1]
    ones = g.new_ones((c, 1) + tuple(p["kernel"]))
    full = F.conv_transpose2d(g, ones, stride=p["stride"], groups=c)
    return [(x, _crop(full, p["padding"], in_size))]


def _batchnorm(node: GraphNode, g: torch.Tensor, w: Walk):
    scale = _bn_scale(node.module)
    return [(node.inputs[0], g * scale.to(g.dtype).view((1, -1) + (1,) * (g.dim() - 2)))]


def _unbroadcast(g: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    if tuple(g.shape) == tuple(shape):
        return g
    if g.dim() != len(shape):
        raise DeconvvizError(f"cannot send a {tuple(g.shape)} signal back to a {shape} input")
    dims = [d for d in range(1, g.dim()) if shape[d] == 1 and g.shape[d] != 1]
    return g.sum(dim=dims, keepdim=True) if dims else g


def _add(node: GraphNode, g: torch.Tensor, w: Walk):
    out = []
    for x, sign in zip(node.inputs, node.params["signs"]):
        if x is not None:
            out.append((x, _unbroadcast(g if sign == 1.0 else g * sign, w.shape(x, g))))
    return out


def _scale(node: GraphNode, g: torch.Tensor, w: Walk):
    return [(node.inputs[0], g * node.params["factor"])]


def _cat(node: GraphNode, g: torch.Tensor, w: Walk):
    dim = node.params["dim"] % g.dim()
    if dim == 0:
        raise DeconvvizError(f"{node.label()} concatenates along the batch dimension")
    sizes = [w.rec.shapes[x][dim - 1] for x in node.inputs]
    return list(zip(node.inputs, torch.split(g, sizes, dim=dim)))


def _reshape(node: GraphNode, g: torch.Tensor, w: Walk):
    (x,) = node.inputs
    return [(x, g.reshape(w.shape(x, g)))]


def _permute(node: GraphNode, g: torch.Tensor, w: Walk):
    p, (x,) = node.params, node.inputs
    if "dims" in p:
        dims = [d % g.dim() for d in p["dims"]]
        inverse = sorted(range(len(dims)), key=dims.__getitem__)
        return [(x, g.permute(inverse))]
    return [(x, g.transpose(p["dim0"], p["dim1"]))]


def _mean(node: GraphNode, g: torch.Tensor, w: Walk):
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
    return [(x, g.expand(shape) / count)]


def _linear(node: GraphNode, g: torch.Tensor, w: Walk):
    return [(node.inputs[0], g.matmul(op_weight(node.spec, w.graph.model).to(g.dtype)))]


def _identity(node: GraphNode, g: torch.Tensor, w: Walk):
    return [(node.inputs[0], g)]


#: The deconvnet's rule for each op kind (see the module docstring).
TRANSPOSES: Dict[str, Transpose] = {
    "conv": _conv, "relu": _rectify, "relu6": _rectify, "maxpool": _maxpool,
    "adaptive_maxpool": _adaptive, "adaptive_avgpool": _adaptive, "avgpool": _avgpool,
    "batchnorm": _batchnorm, "add": _add, "scale": _scale, "cat": _cat, "reshape": _reshape,
    "permute": _permute, "mean": _mean, "linear": _linear, "dropout": _identity,
    "identity": _identity,
}


def reverse_walk(graph: Graph, rec: GraphRecording, node: str, signal: torch.Tensor,
                 image_index: torch.Tensor, rule: str = "deconvnet",
                 unpool: str = "switches") -> torch.Tensor:
    """Send ``signal`` ``(S, ...)`` at node ``node``'s output back to the input: ``(S, C, H, W)``.

    Seed ``s`` uses the switches and masks recorded for image ``image_index[s]``.
    Only the seed node's ancestors are visited, each once, in reverse order.
    """
    walk = Walk(graph, rec, image_index.to(signal.device), rule, unpool)
    pending: Dict[str, torch.Tensor] = {node: signal}
    for n in reversed(graph.ancestors([node])):
        g = pending.pop(n.name, None)
        if g is None:
            continue
        if n.op == "input":
            return g
        rule_fn = TRANSPOSES.get(n.op)
        if rule_fn is None:
            raise DeconvvizError(f"{n.label()} has no deconvnet rule")
        for parent, sent in rule_fn(n, g, walk):
            if parent is not None:
                # Out of place: a signal may be shared by several parents (add).
                pending[parent] = sent if parent not in pending else pending[parent] + sent
    first = graph.nodes[0]
    return signal.new_zeros((signal.shape[0],) + tuple(rec.shapes.get(first.name, first.shape)))


def _bn_scale(m) -> torch.Tensor:
    if isinstance(m, torchvision.ops.FrozenBatchNorm2d):
        return m.weight * (m.running_var + m.eps).rsqrt()
    scale = (m.running_var + m.eps).rsqrt()
    return scale * m.weight if m.weight is not None else scale


def _stamp(graph: Graph, conv: GraphNode, rec: GraphRecording, channel: torch.Tensor,
           y: torch.Tensor, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The transposed conv of one-value seeds: seed ``s`` stamps ``value[s] * W[channel[s]]``
    into the conv's input, kernel tap ``(ky, kx)`` landing on row
    ``y * stride - padding + ky * dilation`` (and likewise for columns)."""
    p, (parent,) = conv.params, conv.inputs
    weight = op_weight(conv.spec, graph.model)
    out_ch, in_g, kh, kw = weight.shape
    c_in, h, w = rec.shapes[parent]
    (sh, sw), (ph, pw), (dh, dw) = p["stride"], p["padding"], p["dilation"]
    h_out, w_out = rec.shapes[conv.name][-2:]
    s, dev = channel.shape[0], value.device
    # A canvas shifted by the padding holds every tap; the image is cut out of it after.
    hc = max(ph + h, (h_out - 1) * sh + (kh - 1) * dh + 1)
    wc = max(pw + w, (w_out - 1) * sw + (kw - 1) * dw + 1)
    taps = ((torch.arange(kh, device=dev) * dh).view(kh, 1) * wc
            + (torch.arange(kw, device=dev) * dw).view(1, kw)).view(-1)
    where = ((y * sh) * wc + x * sw).view(s, 1, 1) + taps.view(1, 1, -1)
    stamps = weight.index_select(0, channel).to(value.dtype) * value.view(-1, 1, 1, 1)
    canvas = value.new_zeros((s, in_g, hc * wc))
    canvas.scatter_add_(2, where.expand(s, in_g, kh * kw), stamps.reshape(s, in_g, kh * kw))
    image = canvas.view(s, in_g, hc, wc)[:, :, ph:ph + h, pw:pw + w]
    if in_g == c_in:
        return image.contiguous()
    out = value.new_zeros((s, p["groups"], in_g, h, w))
    out[torch.arange(s, device=dev), channel // (out_ch // p["groups"])] = image
    return out.view(s, c_in, h, w)


#: Ops a one-value seed passes as one value (to the conv below it, where it becomes a stamp).
POINT_OPS = ("relu", "relu6", "maxpool", "adaptive_maxpool", "batchnorm", "dropout", "identity",
             "scale")


def point_walk(graph: Graph, rec: GraphRecording, node: str, channel: torch.Tensor,
               position: torch.Tensor, value: torch.Tensor, image_index: torch.Tensor,
               rule: str = "deconvnet", unpool: str = "switches") -> Tuple[str, torch.Tensor]:
    """The first steps of :func:`reverse_walk` for seeds that are one value each, in closed form.

    Seed ``s`` is ``value[s]`` at ``(channel[s], *position[s])`` of node ``node``'s
    output ``(C, H, W)``. Down a chain of single-input ops it stays one value: a
    ReLU rectifies it, a max pool (with switches) moves it to its switch, a
    batch norm scales it; the first convolution stamps its filter
    (:func:`_stamp`). That skips the ``S x C x H x w`` signals and the full
    transposed conv that dominate the cost of many seeds on a wide layer.
    Returns ``(name, signal)``: the node whose output ``signal`` ``(S, ...)`` is,
    for :func:`reverse_walk` to take on. Equal to the plain walk.
    """
    idx = image_index.to(value.device)
    y, x, v = position[:, 0].clone(), position[:, 1].clone(), value.clone()
    n = graph.node(node)
    while True:
        if n.op in ("relu", "relu6"):
            if rule != "deconvnet":
                mask = rec.masks[n.name][idx, channel, y, x]
                v = (v.clamp(min=0) if rule == "guided" else v) * mask
            else:
                v = v.clamp(min=0)
        elif n.op in ("maxpool", "adaptive_maxpool") and unpool == "switches":
            flat = rec.switches[n.name][idx, channel, y, x]
            w_in = rec.shapes[n.inputs[0]][-1]
            y, x = flat // w_in, flat % w_in
        elif n.op == "batchnorm":
            v = v * _bn_scale(n.module).to(v.dtype)[channel]
        elif n.op == "scale":
            v = v * n.params["factor"]
        elif n.op == "conv":
            return n.inputs[0], _stamp(graph, n, rec, channel, y, x, v)
        elif n.op not in ("dropout", "identity"):
            dense = v.new_zeros((v.shape[0],) + tuple(rec.shapes[n.name]))
            dense[torch.arange(v.shape[0], device=v.device), channel, y, x] = v
            return n.name, dense
        n = graph.node(n.inputs[0])
