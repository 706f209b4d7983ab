"""The recorded forward pass over each seed's cone only.

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
  reads a whole one (:func:`~.record.cut_record`).

Positions of a window outside its map hold values no seed reads (they are
replaced by the padding before any op that mixes positions). The sums are the
whole pass's; only their order inside a convolution may differ (1e-12 in
float64; in float32 a max pool may break a near-tie the other way).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx

from ...errors import DeconvvizError
from ..net.execute import execute
from ..net.geometry.frames import Frame, window_frame
from ..net.graph import Graph, GraphNode, eval_mode
from ..net.ops import split_sizes
from ..net.run import fetch_attr, op_weight, run_recorded
from ..net.targets import SIGNATURES, bind_args
from .record import GraphRecording, channels_last, constant_value, file_kept, images_per_pass
from .windows import avg_counts, cut_per_seed, fill_outside, inside, shift

__all__ = ["record_cone", "whole_part", "regroup"]


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
    step = images_per_pass(lower, images.element_size(), max_bytes)
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
        file_kept(rec, n, kept.get(n.name))
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
            file_kept(rec, n, switches)
            env[n.name] = value
            for x in n.parents:
                if last_use.get(x) == i and x != seed:
                    env.pop(x, None)
    rec.outputs[seed] = env[seed]
    return rec
