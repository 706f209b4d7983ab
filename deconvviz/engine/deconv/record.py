"""The recorded forward pass on a graph: over whole images, or over each seed's cone only.

A seed at one position of a node depends on the image only inside its cone: at
every node below, the window :meth:`~deconvviz.engine.net.graph.Graph.frames` gives
(the union of what the node's consumers read, through adds and concatenations;
strides, dilation, padding and groups followed). :func:`record_cone` runs every
node of the cone on those windows, one row per seed, so a seed of
``layer1.2.relu_2`` of a 224-pixel ResNet-50 records 35x35 pixels instead of the
whole image:

* a pointwise op (ReLU, batch norm, add, concatenation along channels, ...)
  runs on its inputs cut to its own window;
* a convolution or pool runs **without padding** on the exact input window its
  output window reads; where that window leaves the input map, the values are
  the padding the whole pass sees: ``0`` before a convolution or average pool,
  ``-inf`` before a max pool, and an average pool divides by the count of the
  whole pass (``count_include_pad``, ``ceil_mode``, ``divisor_override``);
* a gate (squeeze-and-excitation: its squeeze averages its whole input) or a
  normalisation with per-image statistics (GroupNorm, InstanceNorm) holds a value of
  the whole image: it and every node below it (:func:`whole_part`) run over whole
  images, once per distinct image, and each seed keeps its window of their outputs and
  records; a LayerNorm over each position's channels (ConvNeXt's) is pointwise;
* switches are the whole pass's flat indices into each pool's input plane, and
  every record keeps its frame, so the reverse walk reads a cone recording as it
  reads a whole one (:func:`cut_record`).

Positions of a window outside its map hold values no seed reads (they are
replaced by the padding before any op that mixes positions). The sums are the
whole pass's; only their order inside a convolution may differ (1e-12 in
float64; in float32 a max pool may break a near-tie the other way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from ...errors import DeconvvizError
from ..net.execute import execute
from ..net.geometry import Frame, window_frame
from ..net.graph import Graph, GraphNode, eval_mode
from ..net.ops import split_sizes
from ..net.run import fetch_attr, op_weight, run_node, run_recorded
from ..net.targets import SIGNATURES, bind_args

__all__ = [
    "SIGNAL_BYTES",
    "GraphRecording",
    "record_whole",
    "record_cone",
    "whole_part",
    "shift",
    "inside",
    "zero_outside",
    "fill_outside",
    "cut_per_seed",
    "cut_record",
    "avg_counts",
    "channels_last",
    "paste",
    "constant_value",
    "regroup",
]


#: The largest signal (bytes) a pass holds at once: a whole-image recording runs as many
#: images at a time as keep its widest map under it; where a reverse pass's signals grow
#: past it (going down towards the image, maps grow), the walk goes on in groups of fewer
#: seeds. The allocator serves blocks above 32 MiB with fresh memory from the kernel
#: (glibc's ceiling for reusing freed blocks) and every new one costs page faults, the
#: system time that otherwise doubles a reverse pass over whole maps (and a whole
#: EfficientNet-B0 forward of 15 images); above the split, many seeds in one batch keep the
#: deep layers' products large (a small matrix product costs twice as much per row).
SIGNAL_BYTES = 16 * 2**20


@dataclass
class GraphRecording:
    """What one recorded forward pass kept, for the nodes below its seed nodes.

    ``outputs[name]``: the seed nodes' outputs ``(R, ...)``; ``switches[name]``:
    every max pool's flat argmax indices into its input plane; ``masks[name]``:
    every elementwise nonlinearity's local slope ``φ'(x)`` when the rule needs it
    (ReLU's is the bool ``0 < y``, ReLU6's ``0 < y < 6``); ``held[name]``: every
    gate's value and every normalisation's factor (statistics held), which all rules
    need; ``shapes[name]``: each node's output shape for one image; ``batch``: R rows.
    A whole recording has a row per image and ``frames`` None; a cone recording
    a row per seed, each record holding ``frames[name]`` at the seeds'
    ``position`` (of its seed node).
    """

    outputs: Dict[str, torch.Tensor]
    switches: Dict[str, torch.Tensor]
    masks: Dict[str, torch.Tensor]
    shapes: Dict[str, Tuple[int, ...]]
    batch: int
    frames: Optional[Dict[str, Frame]] = None
    position: Optional[torch.Tensor] = None
    held: Dict[str, torch.Tensor] = field(default_factory=dict)
    _origins: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def origin(self, name: str) -> Optional[torch.Tensor]:
        """Top-left ``(R, 2)`` of each row's record of ``name``; None for whole maps."""
        if self.frames is None or name not in self.frames:
            return None
        if name not in self._origins:
            self._origins[name] = self.frames[name].origin(self.position)
        return self._origins[name]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    # On the CPU convolutions and pools run several times faster channels-last.
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ----------------------------------------------------------------------------- windows


def shift(
    t: torch.Tensor, offset: Tuple[int, int], size: Tuple[int, int], fill: float = 0.0
) -> torch.Tensor:
    """The ``size`` window of ``t`` ``(S, C, h, w)`` whose top-left is ``offset`` (the same
    for every row); where it leaves ``t``, ``fill``. A window inside ``t`` is a view."""
    h, w = t.shape[-2:]
    top, left = -offset[0], -offset[1]
    bottom, right = size[0] - h - top, size[1] - w - left
    if max(top, left, bottom, right) <= 0:
        return t[..., offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1]]
    if min(top, left, bottom, right) < 0:
        t = t[..., max(offset[0], 0) : h + min(bottom, 0), max(offset[1], 0) : w + min(right, 0)]
    return F.pad(t, (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)), value=fill)


def inside(
    origin: torch.Tensor, size: Tuple[int, int], lo: Tuple[int, int], hi: Tuple[int, int]
) -> Optional[torch.Tensor]:
    """``(S, 1, n_h, n_w)`` bool: window positions inside ``[lo, hi)``; None if all are."""
    dev = origin.device
    ys = origin[:, :1] + torch.arange(size[0], device=dev)
    xs = origin[:, 1:] + torch.arange(size[1], device=dev)
    iy, ix = (ys >= lo[0]) & (ys < hi[0]), (xs >= lo[1]) & (xs < hi[1])
    if bool(iy.all()) and bool(ix.all()):
        return None
    return (iy[:, :, None] & ix[:, None, :]).unsqueeze(1)


def zero_outside(t: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """``t`` with zeros where ``keep`` (from :func:`inside`) is False; ``t`` must be finite
    (a product keeps channels-last and is several times faster than ``masked_fill``)."""
    return t if keep is None else t * keep.to(t.dtype)


#: Elements per row below which :func:`fill_outside` masks the whole tensor in one pass
#: rather than writing a few slices per row (about what four slice writes cost).
_SLICES_PER_ROW = 12_000


def fill_outside(
    t: torch.Tensor,
    origin: torch.Tensor,
    extent: Tuple[int, int],
    value: float = 0.0,
) -> torch.Tensor:
    """``t`` ``(S, ..., n_h, n_w)``, each row a window with top-left ``origin[s]``, set to
    ``value`` **in place** where the window leaves a map ``extent``: a few slices per
    row instead of a pass over the whole tensor (see :func:`zero_outside`)."""
    n = t.shape[-2:]
    o = origin.cpu()
    if t.numel() < _SLICES_PER_ROW * t.shape[0]:
        # Many small rows (a CIFAR seed's window): one masked pass beats a few slices each.
        ys, xs = o[:, :1] + torch.arange(n[0]), o[:, 1:] + torch.arange(n[1])
        iy, ix = (ys >= 0) & (ys < extent[0]), (xs >= 0) & (xs < extent[1])
        out = ~(iy[:, :, None] & ix[:, None, :])
        return t.masked_fill_(out.view((-1,) + (1,) * (t.dim() - 3) + n).to(t.device), value)
    top, left = (-o).clamp(min=0).unbind(1)
    bottom, right = (torch.tensor(extent) - o).clamp(max=torch.tensor(tuple(n))).unbind(1)
    edges = zip(top.tolist(), bottom.tolist(), left.tolist(), right.tolist())
    for s, (a, b, lt, r) in enumerate(edges):
        if a > 0:
            t[s, ..., :a, :] = value
        if b < n[0]:
            t[s, ..., max(b, 0) :, :] = value
        if lt > 0:
            t[s, ..., :lt] = value
        if r < n[1]:
            t[s, ..., max(r, 0) :] = value
    return t


def cut_per_seed(
    t: torch.Tensor, rows: torch.Tensor, offset: torch.Tensor, size: Tuple[int, int]
) -> torch.Tensor:
    """Row ``rows[s]`` of ``t`` ``(R, C, h, w)`` inside the window at ``offset[s]``:
    ``(S, C, n_h, n_w)``; outside ``t`` it repeats the nearest border value."""
    dev = t.device
    ys = (offset[:, :1].to(dev) + torch.arange(size[0], device=dev)).clamp(0, t.shape[-2] - 1)
    xs = (offset[:, 1:].to(dev) + torch.arange(size[1], device=dev)).clamp(0, t.shape[-1] - 1)
    out = t[rows.to(dev)[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # (S, nh, nw, C)
    return out.permute(0, 3, 1, 2)


def cut_record(
    rec: GraphRecording,
    records: Dict[str, torch.Tensor],
    name: str,
    rows: torch.Tensor,
    frame: Optional[Frame],
    origin: Optional[torch.Tensor],
) -> torch.Tensor:
    """Record ``records[name]`` of rows ``rows`` inside each seed's window ``frame``
    (top-left ``origin``): the record itself where the frames agree."""
    t = records[name]
    kept = rec.frames.get(name) if rec.frames is not None else None
    if frame is None or (kept is None and frame.whole) or kept == frame:
        rows = rows.to(t.device)
        if rows.numel() == t.shape[0] and bool(
            (rows == torch.arange(rows.numel(), device=t.device)).all()
        ):
            return t  # every row, in order: no copy (records are never written to)
        # Indexing, not index_select: on the CPU index_select of a 4-d map is several
        # times slower (3-16x measured on torch 2.14), channels-last or not.
        return t[rows]
    here = rec.origin(name)
    offset = origin if here is None else origin - here.index_select(0, rows.to(here.device))
    return cut_per_seed(t, rows, offset, frame.n)


def avg_counts(
    origin: torch.Tensor,
    size: Tuple[int, int],
    extent: Tuple[int, int],
    kernel,
    stride,
    padding,
    include_pad: bool,
) -> torch.Tensor:
    """What an average pool divides each output by, for the input window ``size`` at
    ``origin`` ``(S, 2)`` of a map ``extent``: ``(S, 1, h, w)`` as PyTorch counts."""
    lo = tuple(-p for p in padding) if include_pad else (0, 0)
    hi = tuple(e + p for e, p in zip(extent, padding)) if include_pad else tuple(extent)
    keep = inside(origin, size, lo, hi)
    ones = (
        torch.ones((origin.shape[0], 1) + tuple(size), device=origin.device)
        if keep is None
        else keep.to(torch.float32)
    )
    counts = F.avg_pool2d(ones, kernel, stride, 0, divisor_override=1)
    return counts.clamp(min=1)


# ----------------------------------------------------------------------------- recording


def _keep(rec: GraphRecording, node: GraphNode, kept: Optional[torch.Tensor]) -> None:
    """File what :func:`~deconvviz.engine.net.run.run_recorded` kept for ``node``'s rule."""
    if kept is None:
        return
    if node.op in ("maxpool", "adaptive_maxpool"):
        rec.switches[node.name] = kept
    elif node.op in ("gate", "norm"):
        rec.held[node.name] = kept
    else:
        rec.masks[node.name] = kept


def record_whole(
    graph: Graph, images: torch.Tensor, targets: Sequence[str], masks: bool = True
) -> GraphRecording:
    """One forward pass of ``images`` ``(B, C, H, W)``, only as far as ``targets`` need, in
    passes of as many images as keep the widest map under :data:`SIGNAL_BYTES`.

    Keeps the outputs of ``targets``, every max pool's switches, gate's value and
    normalisation's factor below them and, with ``masks``, every nonlinearity's slope
    (ReLU's mask). No hook is registered: the graph runs node
    by node, in-place ops out of place, in eval mode and without gradients; the
    model's train/eval flags are restored on exit, also when the forward raises.
    """
    lower = graph.ancestors(targets)
    below = {n.name for n in lower}
    rec = GraphRecording({}, {}, {}, {n: graph.node(n).shape for n in below}, int(images.shape[0]))
    step = _images_per_pass(lower, images.element_size())
    kept: Dict[str, List[torch.Tensor]] = {}
    outputs: Dict[str, List[torch.Tensor]] = {}

    def visit(node: GraphNode, value: torch.Tensor, k: Optional[torch.Tensor]) -> None:
        if node.name in below and k is not None:
            kept.setdefault(node.name, []).append(k)

    folds: Dict[torch.nn.Module, tuple] = {}  # batch norms folded into convs, made once
    with torch.no_grad(), eval_mode(graph.model):
        for c0 in range(0, int(images.shape[0]), step):
            x = channels_last(images[c0 : c0 + step])
            out = execute(graph, x, targets, visit, switches=True, slopes=masks, folds=folds)
            for name, v in out.items():
                outputs.setdefault(name, []).append(v)
    for n in lower:
        if n.name in kept:
            _keep(rec, n, _join(kept[n.name]))
    rec.outputs.update({name: _join(v) for name, v in outputs.items()})
    return rec


def _images_per_pass(nodes: Sequence[GraphNode], elem: int, max_bytes: Optional[int] = None) -> int:
    """How many images a whole-image pass over ``nodes`` runs at once: as many as keep its
    widest map under :data:`SIGNAL_BYTES` and four of them under ``max_bytes`` (at least
    one)."""
    widest = elem * max((int(torch.Size(n.shape).numel()) for n in nodes if n.shape), default=1)
    step = SIGNAL_BYTES // widest
    return max(1, step if max_bytes is None else min(step, int(max_bytes) // (4 * widest)))


def _join(parts: List[torch.Tensor]) -> torch.Tensor:
    """The chunks' rows in one tensor (the one chunk itself, uncopied; ``cat`` keeps
    channels-last)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def constant_value(graph: Graph, node: fx.Node):
    """The value of a node that carries no image signal (a parameter, a reshape of one)."""
    if node.op == "get_attr":
        return fetch_attr(graph.model, node.target)
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: constant_value(graph, a))
    return run_node(node, graph.node_of(node).spec, graph.model, args, kwargs)


def _window_op(
    graph: Graph,
    node: GraphNode,
    x: torch.Tensor,
    xf: Frame,
    xo: torch.Tensor,
    f: Frame,
    position: torch.Tensor,
):
    """``node`` (a conv or pool) on its input window, without padding: ``(value, switches)``."""
    kernel, stride, padding, dilation = graph.window_params(node)
    need = window_frame(f, kernel, stride, padding, dilation)
    x = shift(x, tuple(need.a[i] - xf.a[i] for i in range(2)), need.n)
    origin = need.origin(position)
    extent = tuple(graph.node(node.inputs[0]).shape[1:])
    keep = inside(origin, need.n, (0, 0), extent)
    pool = node.op in ("maxpool", "adaptive_maxpool")
    if keep is not None:
        # A copy (the window may be a view of a record other ops read) with the padding
        # the whole pass sees filled in.
        x = x.clone(memory_format=torch.channels_last if x.dim() == 4 else torch.preserve_format)
        fill_outside(x, origin, extent, float("-inf") if pool else 0.0)
    x = channels_last(x)
    if node.op == "conv":
        if node.fx_node.op == "call_module":
            bias = node.module.bias
        else:
            b = bind_args(SIGNATURES["conv"], node.fx_node.args, node.fx_node.kwargs).get("bias")
            bias = fetch_attr(graph.model, b.target) if isinstance(b, fx.Node) else b
        return F.conv2d(
            x, op_weight(node.spec, graph.model), bias, stride, 0, dilation, node.params["groups"]
        ), None
    if node.op in ("maxpool", "adaptive_maxpool"):
        value, local = F.max_pool2d(x, kernel, stride, 0, dilation, return_indices=True)
        # A window wholly in the padding gives -inf, which no op after may see (every
        # value kept is finite, so windows can be cut by products).
        fill_outside(value, f.origin(position), tuple(node.shape[1:]))
        # The flat index into the input plane: local + row * (W - n_w) + the window's start.
        nw = need.n[1]
        sw = local.div(nw, rounding_mode="floor").mul_(extent[1] - nw).add_(local)
        sw.add_((origin[:, 0] * extent[1] + origin[:, 1]).view(-1, 1, 1, 1).to(sw.device))
        return value, sw
    total = F.avg_pool2d(x, kernel, stride, 0, divisor_override=1)
    p = node.params
    if node.op == "avgpool" and p["divisor_override"]:
        return total / float(p["divisor_override"]), None
    if node.op == "adaptive_avgpool":
        return total / float(kernel[0] * kernel[1]), None
    counts = avg_counts(origin, need.n, extent, kernel, stride, padding, p["count_include_pad"])
    return total / counts.to(total.dtype), None


def _cut_node(
    graph: Graph, name: str, t: torch.Tensor, rows: torch.Tensor, origin: torch.Tensor, f: Frame
) -> torch.Tensor:
    """Row ``rows[s]`` of a whole-image value or record of node ``name`` inside seed ``s``'s
    window ``f`` (top-left ``origin[s]``); a value per channel ``(R, C, 1, 1)`` of a larger
    map (a gate's) is per seed as it is."""
    spatial = tuple(graph.node(name).shape[1:])
    if t.dim() == 4 and t.shape[-1] * t.shape[-2] == 1 and spatial != (1, 1):
        return t.index_select(0, rows)
    if graph.channels_last(name):
        return cut_per_seed(t.permute(0, 3, 1, 2), rows, origin, f.n).permute(0, 2, 3, 1)
    return cut_per_seed(t, rows, origin, f.n)


def regroup(node: GraphNode, x: torch.Tensor) -> torch.Tensor:
    """A reshape of the channels or a piece of a chunk along them (channel shuffle:
    :meth:`~deconvviz.engine.net.graph.Graph.frames` passes only those) on a window ``x``
    ``(S, ..., h, w)``: the network's per-image shape with the window's map. The network
    computes the view's sizes off the whole map (``x.size()``), so it is not run as traced."""
    if node.op == "reshape":
        return x.reshape((x.shape[0],) + tuple(node.shape[:-2]) + tuple(x.shape[-2:]))
    p = node.params
    dim = p["dim"] % x.dim()
    sizes = split_sizes(x.shape[dim], p["how"])
    return x.narrow(dim, sum(sizes[: p["index"]]), sizes[p["index"]])


def _move(graph: Graph, name: str, t: torch.Tensor, have: Frame, want: Frame) -> torch.Tensor:
    """Node ``name``'s window ``t`` on frame ``have`` as the window ``want`` (a shift; a
    channels-last ``(S, H, W, C)`` map shifts its dims 1 and 2)."""
    offset = tuple(want.a[k] - have.a[k] for k in range(2))
    if graph.channels_last(name):
        return shift(t.permute(0, 3, 1, 2), offset, want.n).permute(0, 2, 3, 1)
    return shift(t, offset, want.n)


def whole_part(graph: Graph, seed: str) -> List[GraphNode]:
    """The nodes under ``seed`` a cone recording takes from whole-image passes: every node
    that :meth:`~deconvviz.engine.net.graph.Graph.holds_whole_image` (a gate's value needs
    the global average of its whole input) and every node below one, in execution order."""
    held = [n.name for n in graph.ancestors([seed]) if graph.holds_whole_image(n.name)]
    return graph.ancestors(held) if held else []


def _record_whole_part(
    graph: Graph,
    images: torch.Tensor,
    seed: str,
    image_index: torch.Tensor,
    rec: GraphRecording,
    lower: List[GraphNode],
    order: List[GraphNode],
    env: Dict[str, torch.Tensor],
    masks: bool,
    max_bytes: int,
) -> None:
    """Run ``lower`` over each seed's whole image, once per distinct image, and keep each
    seed's window of what the cone needs: the records of ``lower`` (switches, slopes, held
    values) into ``rec`` and the outputs the nodes above read (or the seed's) into ``env``."""
    names = {n.name for n in lower}
    wanted = {p for n in order if n.name not in names for p in n.parents if p in names}
    if seed in names:
        wanted.add(seed)
    targets = [n.name for n in lower if n.name in wanted]
    used, local = torch.unique(image_index.cpu(), return_inverse=True)
    step = _images_per_pass(lower, images.element_size(), max_bytes)
    s = int(image_index.shape[0])
    kept: Dict[str, torch.Tensor] = {}
    values: Dict[str, torch.Tensor] = {}

    def put(store: Dict[str, torch.Tensor], name: str, cut: torch.Tensor, sel, whole) -> None:
        if whole:
            store[name] = cut
            return
        if name not in store:
            store[name] = cut.new_empty((s,) + tuple(cut.shape[1:]))
        store[name][sel.to(cut.device)] = cut

    def visitor(sel: torch.Tensor, rows: torch.Tensor, whole: bool):
        pos = rec.position.index_select(0, sel.to(rec.position.device))

        def visit(node: GraphNode, value: torch.Tensor, k: Optional[torch.Tensor]) -> None:
            if node.name not in names:
                return
            f = rec.frames[node.name]
            origin = f.origin(pos)
            if k is not None:
                put(kept, node.name, _cut_node(graph, node.name, k, rows, origin, f), sel, whole)
            if node.name in wanted:
                cut = _cut_node(graph, node.name, value, rows, origin, f)
                put(values, node.name, cut, sel, whole)

        return visit

    folds: Dict[torch.nn.Module, tuple] = {}
    for c0 in range(0, used.numel(), step):
        sel = ((local >= c0) & (local < c0 + step)).nonzero().view(-1)
        rows = (local[sel] - c0).to(images.device)
        chunk = used[c0 : c0 + step].to(images.device)
        execute(
            graph,
            channels_last(images[chunk]),  # not index_select: see cut_record
            targets,
            visitor(sel, rows, c0 == 0 and step >= used.numel()),
            switches=True,
            slopes=masks,
            folds=folds,
        )
    for n in lower:
        _keep(rec, n, kept.get(n.name))
    for name, v in values.items():
        env[name] = channels_last(v) if v.dim() == 4 and not graph.channels_last(name) else v


def record_cone(
    graph: Graph,
    images: torch.Tensor,
    seed: str,
    image_index: torch.Tensor,
    position: torch.Tensor,
    masks: bool = True,
    block: Tuple[int, int] = (1, 1),
    max_bytes: int = 256 * 2**20,
) -> GraphRecording:
    """Record, for S seeds at ``position`` ``(S, 2)`` of node ``seed`` on images
    ``images[image_index]``, the forward pass inside each seed's cone only.

    Row ``s`` of every record belongs to seed ``s``; ``outputs[seed]`` is
    ``(S, C, 1, 1)``, each seed's own column (with ``block``, the union of the cones
    of a ``(rows, columns)`` block of positions whose top-left is ``position[s]``:
    ``(S, C, rows, columns)``, which seeds of one image share). The node must have a cone
    (``graph.frames(seed)`` not None). A gate, or a normalisation with per-image
    statistics, below the seed holds a value of the whole image: that node and every
    node below it (:func:`whole_part`) run over whole images, once per distinct image
    (in passes of at most ``max_bytes``), and each seed keeps its window of their
    records and outputs; the nodes above run inside the cone.
    """
    frames = graph.frames(seed, block=block)
    if frames is None:
        raise DeconvvizError(
            f"node '{seed}' cannot be recorded inside its cone (no cone); record whole images"
        )
    order = graph.ancestors([seed])
    pos = position.to(torch.int64).to(images.device)
    rec = GraphRecording(
        {}, {}, {}, {n.name: n.shape for n in order}, int(pos.shape[0]), frames=frames, position=pos
    )
    env: Dict[str, torch.Tensor] = {}
    lower = whole_part(graph, seed)
    below = {n.name for n in lower}
    above = [n for n in order if n.name not in below]
    last_use: Dict[str, int] = {}
    for i, n in enumerate(above):
        for x in n.parents:
            last_use[x] = i
    with torch.no_grad(), eval_mode(graph.model):
        if lower:
            _record_whole_part(
                graph, images, seed, image_index, rec, lower, order, env, masks, max_bytes
            )
        for i, n in enumerate(above):
            f = frames[n.name]
            switches = None
            if n.op == "input":
                value = channels_last(cut_per_seed(images, image_index, rec.origin(n.name), f.n))
            elif n.op in ("reshape", "narrow"):
                x = n.inputs[0]
                value = regroup(n, _move(graph, x, env[x], frames[x], f))
            elif graph.window_params(n) is None:
                # pointwise, and permutes and Linear layers of a channels-last block

                def arg(a, f=f):  # this node's frame, bound now (fx calls it at once)
                    name = graph.name_of(a)
                    if name in env:
                        return _move(graph, name, env[name], frames[name], f)
                    return constant_value(graph, a)

                fxn = n.fx_node
                args, kwargs = fx.node.map_arg((fxn.args, fxn.kwargs), arg)
                value, switches = run_recorded(fxn, n.spec, graph.model, args, kwargs, masks)
            else:
                x = n.inputs[0]
                value, switches = _window_op(graph, n, env[x], frames[x], rec.origin(x), f, pos)
            _keep(rec, n, switches)
            env[n.name] = value
            for x in n.parents:
                if last_use.get(x) == i and x != seed:
                    env.pop(x, None)
    rec.outputs[seed] = env[seed]
    return rec


def paste(
    windows: torch.Tensor,
    origin: torch.Tensor,
    canvas_origin: torch.Tensor,
    canvas_size: Tuple[int, int],
    out: Optional[torch.Tensor] = None,
    rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Each window ``(S, C, n_h, n_w)`` (top-left ``origin[s]``) on a zero canvas
    ``(S, C, *canvas_size)`` whose top-left is ``canvas_origin[s]``; what falls off
    the canvas is dropped (it is zero: outside the image, or outside the window).
    ``out``: a zeroed ``(N, C, *canvas_size)`` tensor to add the canvases into, at its
    rows ``rows`` (distinct; default ``0 .. S-1``), so that chunks of seeds land in
    one result without copies; it is returned."""
    s, c, nh, nw = windows.shape
    off = (origin - canvas_origin).to(windows.device)
    dev = windows.device
    same = s > 0 and bool((off == off[:1]).all())
    if out is None and same:
        return shift(windows, tuple(-int(v) for v in off[0]), canvas_size)
    if out is None:
        out = windows.new_zeros((s, c) + tuple(canvas_size))
    rows = torch.arange(s, device=dev) if rows is None else rows.to(dev)
    if s == 0:
        return out
    if same:
        return out.index_add_(0, rows, shift(windows, tuple(-int(v) for v in off[0]), canvas_size))
    ys = off[:, :1] + torch.arange(nh, device=dev)
    xs = off[:, 1:] + torch.arange(nw, device=dev)
    keep = ((ys >= 0) & (ys < canvas_size[0]))[:, :, None] & ((xs >= 0) & (xs < canvas_size[1]))[
        :, None, :
    ]
    vals = windows * keep.unsqueeze(1).to(windows.dtype)
    # Accumulate: clamped rows of an off-canvas (zero) part add 0 where they land.
    out.index_put_(
        (
            rows.view(-1, 1, 1, 1),
            torch.arange(c, device=dev).view(1, -1, 1, 1),
            ys.clamp(0, canvas_size[0] - 1).view(s, 1, nh, 1),
            xs.clamp(0, canvas_size[1] - 1).view(s, 1, 1, nw),
        ),
        vals,
        accumulate=True,
    )
    return out
