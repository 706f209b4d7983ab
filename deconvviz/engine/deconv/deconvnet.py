"""The deconvnet on any traced CNN: record the forward pass, seed, walk the graph back.

Zeiler & Fergus (arXiv 1311.2901) on any network
:func:`~deconvviz.engine.net.graph.build_graph` can trace: the bundled CNN, AlexNet,
VGG (with batch norm), ResNets, GoogLeNet, DenseNet, MobileNet, SqueezeNet, your
own. A layer is a torchvision node name (``"layer3.1.relu_1"``) or, on a plain
conv stack, a block number, which is only a name for a node.

A seed at one position depends on the image only inside its cone
(:meth:`~deconvviz.engine.net.graph.Graph.frames`), so each node's seeds take the
cheapest of three ways, chosen by multiply-adds (:func:`plan`):

* ``record="cone"``: each seed records the forward pass inside its cone only
  (:func:`~deconvviz.engine.deconv.record.record_cone`; seeds at known positions
  where there are more images than the cones cost, e.g. shallow nodes of large
  images);
* ``record="whole"``: each distinct image is recorded once, as far as the node
  needs (:func:`~deconvviz.engine.deconv.record.record_whole`). A cone recording
  takes what holds a value of the whole image (a gate, a normalisation with per-image
  statistics, and everything below it) from one whole pass of each image
  (:func:`~deconvviz.engine.deconv.record.whole_part`);
* ``walk="cone"`` or ``"whole"``: the reverse pass inside each seed's cone, or
  over whole maps (where the cone covers the image, for ``mode="map"``, and
  where no cone exists: a logit, a flatten below the seed).

Every way gives the same projections (proved against autograd in float64).
Seeds go in chunks under one memory budget (:data:`MAX_BYTES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ...errors import DeconvvizError
from ..net.execute import execute
from ..net.geometry import Frame, window_origins
from ..net.graph import Graph, GraphNode, eval_mode
from ..net.network import graph_of
from ..net.run import op_weight
from .projection import (
    MODES,
    RULES,
    UNPOOLS,
    Projection,
    check_choice,
    check_seeds,
    max_positions,
    seed_maps,
)
from .record import (
    SIGNAL_BYTES,
    GraphRecording,
    channels_last,
    paste,
    record_cone,
    record_whole,
    whole_part,
)
from .reverse import Walk, point_walk, reverse_walk

__all__ = [
    "RULES",
    "UNPOOLS",
    "MODES",
    "Projection",
    "Seeds",
    "Plan",
    "MAX_BYTES",
    "plan",
    "macs",
    "block_macs",
    "share_cones",
    "BLOCKS",
    "record_graph",
    "node_outputs",
    "project_recorded",
    "project_positions",
    "deconvolve",
    "deconvolve_many",
    "project",
    "graph_for",
]

Layer = Union[int, str]

#: The one memory budget (bytes): a chunk of rows of a recording, or of seeds of a reverse
#: pass, holds at most this much at its peak (an estimate from the frames' sizes).
MAX_BYTES = 256 * 2**20


@dataclass
class Seeds:
    """Many seeds on one node: seed ``s`` is channel ``feature[s]`` of image ``image_index[s]``.

    ``layer``: node name or block number; ``feature``: int or ``(S,)``;
    ``image_index``: ``(S,)`` (default: one seed per image, ``feature``
    broadcast); ``position``: ``(S, 2)`` or one ``(row, col)`` for
    ``mode="position"``.
    """

    layer: Layer
    feature: Union[int, Sequence[int], torch.Tensor]
    image_index: Optional[Union[Sequence[int], torch.Tensor]] = None
    position: Optional[Union[Sequence[int], torch.Tensor]] = None


@dataclass(frozen=True)
class Plan:
    """How one node's seeds go: ``record`` ``"cone"`` or ``"whole"``, ``walk`` likewise."""

    record: str = "whole"
    walk: str = "whole"


def graph_for(model: nn.Module, images: torch.Tensor, graph: Optional[Graph] = None) -> Graph:
    """``graph`` (or ``model``'s, traced once: :func:`~deconvviz.engine.net.network.graph_of`)
    analysed at the images' size, after checks."""
    if images.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    size = (int(images.shape[-2]), int(images.shape[-1]))
    graph = graph_of(model, size, None if graph is not None else images.shape[1], graph)
    if images.shape[1] != graph.in_channels:
        raise DeconvvizError(
            f"images have {images.shape[1]} channels; the network takes {graph.in_channels}"
        )
    return graph


# ----------------------------------------------------------------------------- cost and memory


def macs(graph: Graph, frames: Dict[str, Frame], names: Optional[set] = None) -> int:
    """Multiply-adds of the forward pass on ``frames`` (one seed's cone, or whole maps), of
    the nodes in ``names`` (default: every node of ``frames``): a convolution's, a Linear
    layer's on a channels-last map (ConvNeXt's pointwise layers, where most of its work
    is), and one per output value of every other op (elementwise ops, pools, adds)."""
    total = 0
    for name, f in frames.items():
        if names is not None and name not in names:
            continue
        n = graph.node(name)
        channels, area = graph.map_size(name, f)
        if n.op == "conv":
            w = graph.window_params(n)[0]
            parent = n.inputs[0]
            x = graph.node(parent).shape if parent is not None else None
            assert x is not None  # a traced conv: its input's shape is known
            total += area * channels * x[0] // n.params["groups"] * w[0] * w[1]
        elif n.op == "linear":
            total += area * op_weight(n.spec, graph.model).numel()
        else:
            total += area * channels
    return total


def _whole_frames(graph: Graph, node: str) -> Dict[str, Frame]:
    frames = graph.frames(node, whole=True)
    assert frames is not None  # whole maps always exist; only a cone may not
    return frames


def block_macs(graph: Graph, node: str, names: Optional[set] = None) -> Tuple[int, int, int, int]:
    """``(a, b, c, d)``: recording a ``(rows, columns)`` block of positions of ``node``
    (the union of their cones) costs ``a + b*(rows-1) + c*(columns-1) +
    d*(rows-1)*(columns-1)`` multiply-adds (:func:`macs`, of the nodes in ``names``, default
    all: a frame's extent grows by its jump per extra position, through windows and unions
    alike)."""

    def at(block: Tuple[int, int]) -> int:
        frames = graph.frames(node, block=block)
        assert frames is not None  # only nodes with a cone are grouped
        return macs(graph, frames, names)

    a = at((1, 1))
    b, c = at((2, 1)) - a, at((1, 2)) - a
    d = at((2, 2)) - a - b - c
    return a, b, c, d


#: Seeds that a chunk of cone recordings holds at least, whatever its bytes: below some 64,
#: the ops' fixed cost per chunk shows (ResNet-50's shallow seeds, some MiB each, ran 1.5x
#: the CPU time in chunks of 16 MiB).
CHUNK_SEEDS = 64


def _chunk_bytes(per_seed: int, max_bytes: int) -> int:
    """What one chunk of cone recordings and walks holds at most: :data:`SIGNAL_BYTES`, or
    :data:`CHUNK_SEEDS` seeds where those are more, within ``max_bytes``. Chunks past
    ``SIGNAL_BYTES`` of many small seeds cost more per seed (fresh pages for their
    tensors, caches overrun): CIFAR-10's 864 report seeds took 25% more CPU time in one
    chunk per node than in chunks of 16 MiB."""
    return min(int(max_bytes), max(SIGNAL_BYTES, CHUNK_SEEDS * int(per_seed)))


#: The block sizes :func:`share_cones` tries (square, in positions of the seed node).
BLOCKS = (1, 2, 3, 4)


def share_cones(
    graph: Graph, node: str, image_index: torch.Tensor, position: torch.Tensor
) -> List[Tuple[Tuple[int, int], int, Tuple[int, int], List[int]]]:
    """Seeds at known positions of ``node``, grouped so that seeds of one image whose cones
    overlap share one recording: ``[(block, image, top-left, seeds), ...]``.

    A group records the union of the cones of a ``block`` of positions (one size for
    all groups, so they record in one batch): each image's seeds are covered greedily
    (first by row, then column) by blocks whose top-left is a seed, for each size of
    :data:`BLOCKS`; the size whose blocks cost the fewest multiply-adds
    (:func:`block_macs`) wins, the smaller on a tie. Seeds at one position of one image
    always share. Deterministic.
    """
    a, b, c, d = block_macs(graph, node)
    idx, pos = image_index.tolist(), [tuple(p) for p in position.tolist()]
    per_image: Dict[int, List[int]] = {}
    for s in sorted(range(len(idx)), key=lambda s: (idx[s], pos[s], s)):
        per_image.setdefault(idx[s], []).append(s)

    def cover(size: int, image: int, todo: List[int]) -> list:
        groups = []
        while todo:
            y, x = pos[todo[0]]
            mine, rest = [], []
            for s in todo:  # one pass: the block's seeds, and the rest in their order
                py, px = pos[s]
                (mine if y <= py < y + size and x <= px < x + size else rest).append(s)
            groups.append(((size, size), image, (y, x), sorted(mine)))
            todo = rest
        return groups

    # An image with one seed is one group of every size: only the others need covering
    # to count the groups of each size (the cost is a count times a block's). Each
    # size's cover is kept for the winner's groups.
    shared = [(image, todo) for image, todo in per_image.items() if len(todo) > 1]
    covers: Dict[int, Dict[int, list]] = {}
    best: Optional[Tuple[int, int]] = None
    for size in BLOCKS:
        covers[size] = {image: cover(size, image, todo) for image, todo in shared}
        count = len(per_image) - len(shared) + sum(len(v) for v in covers[size].values())
        k = size - 1
        cost = count * (a + b * k + c * k + d * k * k)
        if best is None or cost < best[0]:
            best = (cost, size)
    assert best is not None
    size = best[1]
    groups = []
    for image, todo in per_image.items():
        if len(todo) == 1:
            groups.append(((size, size), image, pos[todo[0]], todo))
        else:
            groups += covers[size][image]
    return groups


def _cone_groups(graph: Graph, node: GraphNode, idx: torch.Tensor, pos: torch.Tensor):
    """``(groups, multiply-adds)``: the seeds at ``pos`` as :func:`share_cones` groups them,
    and what recording their cones costs (the nodes above :func:`whole_part` only: those
    below run once per image); ``(None, None)`` where the node has no cone."""
    cone = graph.frames(node.name)
    if cone is None or idx.numel() == 0:
        return None, None
    below = {n.name for n in whole_part(graph, node.name)}
    a, b, c, d = block_macs(graph, node.name, set(cone) - below)
    groups = share_cones(graph, node.name, idx, pos)
    total = 0
    for (h, w), *_ in groups:
        total += a + b * (h - 1) + c * (w - 1) + d * (h - 1) * (w - 1)
    return groups, total


def plan(
    graph: Graph,
    node: str,
    mode: str,
    seeds: int,
    images: int,
    cone_macs: Optional[int] = None,
) -> Plan:
    """The cheapest way for ``seeds`` seeds of ``node`` on ``images`` distinct images
    (``cone_macs``: what recording their cones above :func:`whole_part` costs, default
    ``seeds`` cones).

    A cone recording runs what holds a value of the whole image (a gate, and every node
    below it: :func:`~deconvviz.engine.deconv.record.whole_part`) once per image and the
    rest once per seed inside its cone; a whole recording runs everything once per image."""
    cone = graph.frames(node) if mode != "map" else None
    if cone is None:
        return Plan()
    whole_frames = _whole_frames(graph, node)
    whole = macs(graph, whole_frames)
    hybrid = graph.frames(node, hybrid=True)
    walk = "cone" if hybrid is not None and macs(graph, hybrid) < whole else "whole"
    cost = macs(graph, cone)
    if cost >= whole:
        return Plan("whole", walk)
    below = {n.name for n in whole_part(graph, node)}
    above = set(cone) - below
    if cone_macs is None:
        cone_macs = seeds * macs(graph, cone, above)
    by_cone = images * macs(graph, whole_frames, below) + cone_macs
    return Plan("cone" if mode == "position" and by_cone < images * whole else "whole", "cone")


def _bytes(graph: Graph, node: str, frames, elem: int, masks: bool) -> Tuple[int, int]:
    """``(walk bytes per seed, record bytes per row)`` on ``frames``."""
    widest, kept = 1, 0
    for n in graph.ancestors([node]):
        if n.shape is None:
            continue
        channels, positions = graph.map_size(n.name, frames.get(n.name) if frames else None)
        size = channels * positions
        widest = max(widest, size)
        if n.op in ("maxpool", "adaptive_maxpool"):
            kept += size * 8
        elif masks and n.op in ("relu", "relu6"):
            kept += size
        elif n.op == "norm" or (masks and n.op == "nonlinear"):
            kept += size * elem
    # A signal, the one it is added to, and the op's temporary.
    return 3 * widest * elem, kept + 3 * widest * elem


# ----------------------------------------------------------------------------- recording


def record_graph(
    graph: Graph, images: torch.Tensor, nodes: Sequence[Layer], masks: bool = True
) -> GraphRecording:
    """One whole forward pass of ``images`` ``(B, C, H, W)``, only as far as ``nodes`` need
    (see :func:`~deconvviz.engine.deconv.record.record_whole`), after checking each node."""
    return record_whole(graph, images, [graph.check_seed(n).name for n in nodes], masks)


def node_outputs(
    graph: Graph, images: torch.Tensor, nodes: Sequence[Layer]
) -> Dict[str, torch.Tensor]:
    """The outputs ``{name: (B, ...)}`` of ``nodes`` on ``images``, running only what they need.

    A plain forward pass (no switches, no masks) for scanning activations, e.g.
    the top-k search; eval mode, no gradients, the model left as found.
    """
    names = [graph.node(n).name for n in nodes]
    for name in names:
        if graph.node(name).error:
            raise DeconvvizError(graph.node(name).error)
    with torch.no_grad(), eval_mode(graph.model):
        return execute(graph, channels_last(images), names)


# ----------------------------------------------------------------------------- projecting


def _canvas(graph: Graph, node: GraphNode, pos: torch.Tensor, windows: bool):
    """Size and per-seed top-left of what a projection is placed on: the seed's
    receptive-field window with ``windows``, else the whole image."""
    if windows:
        info = graph.info(node.name)
        return tuple(info.rf_size), window_origins(info, pos)
    return tuple(graph.input_size), torch.zeros_like(pos)


@torch.no_grad()
def project_recorded(
    graph: Graph,
    rec: GraphRecording,
    layer: Layer,
    rows: torch.Tensor,
    feature: torch.Tensor,
    *,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    position: Optional[torch.Tensor] = None,
    max_bytes: int = MAX_BYTES,
    walk: str = "whole",
    windows: bool = False,
    closed_form: bool = True,
    into: Optional[torch.Tensor] = None,
    into_rows: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed and project S seeds of node ``layer`` from a recording.

    Seed ``s`` is channel ``feature[s]`` of recorded row ``rows[s]`` (an image of a
    whole recording, the seed's own row of a cone recording): its strongest
    activation (``mode="max"``, first in row-major order), its whole map
    (``"map"``) or its value at ``position[s]`` (``"position"``); every other
    value is zero. A ``(B, C)`` node (a logit) is one position ``(0, 0)``.
    ``walk``: ``"cone"`` goes back inside each seed's cone (one-value seeds),
    ``"whole"`` over whole maps. Returns ``(projections (S, C_in, H, W), activation
    (S,), position (S, 2))``; with ``windows`` each projection is its seed's
    receptive-field window ``(S, C_in, rf_h, rf_w)`` (top-left ``rf_start +
    position * rf_jump``, zero outside the image) instead of the whole image.
    One-value seeds take the closed form of :func:`~.reverse.point_walk`
    down to the first conv (``closed_form=False``: the plain walk; the same result).
    ``into``: a zeroed ``(N, C_in, H, W)`` tensor (windows: ``rf_h, rf_w``) whose rows
    ``into_rows`` ``(S,)`` (distinct) receive the projections, returned in their place:
    the chunks of several calls land in one tensor without copies.
    """
    node = graph.node(layer)
    out = rec.outputs[node.name]
    flat = out.dim() == 2
    out4 = out.reshape(out.shape[0], out.shape[1], 1, 1) if flat else out
    device = out.device
    rows, feat = rows.to(device), feature.to(device)
    if flat and position is None:
        position = torch.zeros((rows.numel(), 2), dtype=torch.int64)
    pos_all = None if position is None else position.to(device).to(torch.int64)
    cone = walk == "cone" and mode != "map" and not flat
    # A walk over whole recordings takes the whole map wherever the cone is as large.
    frames = graph.frames(node.name, whole=not cone, hybrid=cone and rec.frames is None)
    assert frames is not None  # a cone walk is planned only where the cone exists
    per_seed, _ = _bytes(graph, node.name, frames, out.element_size(), False)
    chunk = max(1, int(max_bytes) // per_seed)
    first = graph.nodes[0]
    channels = graph.in_channels
    activations, positions = [], []
    single = into is None and rows.numel() <= chunk  # its result is the one chunk's, uncopied
    if into is None and not single:
        size = graph.info(node.name).rf_size if windows and not flat else graph.input_size
        into = out4.new_zeros((rows.numel(), channels) + tuple(size))
    if into_rows is None:
        into_rows = torch.arange(rows.numel())
    result = into
    weights: Dict = {}  # the convs' weights as the walks use them, made once for all chunks
    for c0 in range(0, rows.numel(), chunk):
        sl = slice(c0, c0 + chunk)
        r, f = rows[sl], feat[sl]
        if mode == "map" or flat:
            seeds, act, pos = seed_maps(out4, r, f, mode, None if pos_all is None else pos_all[sl])
            if flat:
                seeds = seeds.reshape(seeds.shape[0], -1)
        else:
            if mode == "max":
                _, act, pos = max_positions(out, r, f)
            else:
                assert pos_all is not None  # mode "position" comes with positions
                pos = pos_all[sl]
                here = rec.origin(node.name)
                at = pos if here is None else pos - here.index_select(0, r.to(here.device))
                act = out[r, f, at[:, 0], at[:, 1]]
        w = Walk(graph, rec, r, pos, frames, rule, unpool, weights=weights)
        if mode != "map" and not flat and closed_form:
            start, signal = point_walk(w, node.name, f, act)
        elif mode != "map" and not flat and cone:
            seeds = out.new_zeros((r.numel(), out.shape[1], 1, 1))
            seeds[torch.arange(r.numel(), device=device), f, 0, 0] = act
            start, signal = node.name, seeds
        elif mode != "map" and not flat:
            start, signal = node.name, seed_maps(out, r, f, "position", pos)[0]
        else:
            start, signal = node.name, seeds
        g = reverse_walk(w, start, signal)
        size, canvas = _canvas(graph, node, pos.cpu(), windows)
        f_in = frames.get(first.name)
        whole_in = f_in is None or f_in.whole
        here = None if single else into_rows[sl]
        if whole_in and not windows:  # the whole image already
            if single:
                result = g
            else:
                assert result is not None and here is not None
                result[here.to(result.device)] = g
        else:
            origin = (
                torch.zeros_like(canvas) if f_in is None or f_in.whole else f_in.origin(pos.cpu())
            )
            result = paste(g, origin, canvas, size, out=result, rows=here)
        activations.append(act)
        positions.append(pos)
    if not activations:
        size = graph.info(node.name).rf_size if windows and not flat else graph.input_size
        return (
            out4.new_zeros((0, channels) + tuple(size)) if result is None else result,
            out4.new_zeros(0),
            torch.zeros((0, 2), dtype=torch.int64),
        )
    assert result is not None  # at least one chunk
    return result, _join(activations), _join(positions)


def _join(parts: List[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _place(act, sel: torch.Tensor, a: torch.Tensor, n: int) -> torch.Tensor:
    """Chunk ``a`` into rows ``sel`` of the ``n`` seeds' activations (made on first use)."""
    if act is None:
        act = a.new_empty(n)  # every row is some chunk's
    act[sel.to(a.device)] = a
    return act


@torch.no_grad()
def project_positions(
    graph: Graph,
    images: torch.Tensor,
    layer: Layer,
    image_index: torch.Tensor,
    feature: torch.Tensor,
    position: torch.Tensor,
    *,
    rule: str = "deconvnet",
    unpool: str = "switches",
    windows: bool = False,
    max_bytes: int = MAX_BYTES,
    how: Optional[Plan] = None,
    groups: Optional[list] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project S seeds at known positions of node ``layer``: ``(projections, activation (S,))``.

    Seed ``s`` is channel ``feature[s]`` at ``position[s]`` of image
    ``images[image_index[s]]`` (model input). Records each distinct image once, or
    each seed's cone, whichever costs fewer multiply-adds (``how`` forces a
    :class:`Plan`), in chunks under ``max_bytes``; projections as
    :func:`project_recorded` returns them (``windows``: receptive-field windows).
    ``groups``: the seeds' :func:`share_cones` groups, where the caller has made them.
    """
    node = graph.check_seed(layer)
    masks = rule != "deconvnet"
    idx = image_index.to(torch.int64)
    pos = position.to(torch.int64)
    used, local = torch.unique(idx, return_inverse=True)
    if how is None:
        groups, cost = _cone_groups(graph, node, idx, pos)
        how = plan(graph, node.name, "position", idx.numel(), used.numel(), cost)
    elem = images.element_size()
    size = graph.info(node.name).rf_size if windows else graph.input_size
    if idx.numel() == 0:
        return images.new_zeros((0, images.shape[1]) + tuple(size)), images.new_zeros(0)
    # Every chunk's projections land in their rows of one zeroed result.
    proj = images.new_zeros((idx.numel(), images.shape[1]) + tuple(size))
    act = None
    if how.record == "whole":
        # The distinct images in chunks whose recordings fit the budget.
        _, per_image = _bytes(graph, node.name, graph.frames(node.name, whole=True), elem, masks)
        step = max(1, int(max_bytes) // per_image)
        for c0 in range(0, used.numel(), step):
            sel = ((local >= c0) & (local < c0 + step)).nonzero().view(-1)
            chunk = used[c0 : c0 + step].to(images.device)
            rec = record_whole(graph, images[chunk], [node.name], masks)
            _, a, _ = project_recorded(
                graph,
                rec,
                node.name,
                local[sel] - c0,
                feature[sel],
                mode="position",
                rule=rule,
                unpool=unpool,
                position=pos[sel],
                max_bytes=max_bytes,
                walk=how.walk,
                windows=windows,
                into=proj,
                into_rows=sel,
            )
            act = _place(act, sel, a, idx.numel())
        assert act is not None  # at least one seed, so one chunk
        return proj, act
    # Seeds of one image with overlapping cones share a recording (a block of positions);
    # groups of one block size are recorded together, in chunks under the budget.
    walk_bytes, _ = _bytes(graph, node.name, graph.frames(node.name), elem, masks)
    by_block: Dict[Tuple[int, int], list] = {}
    for g in groups if groups is not None else share_cones(graph, node.name, idx, pos):
        by_block.setdefault(g[0], []).append(g)
    for block in sorted(by_block):
        _, rec_bytes = _bytes(graph, node.name, graph.frames(node.name, block=block), elem, masks)
        cap = _chunk_bytes(rec_bytes + walk_bytes, max_bytes)
        todo = by_block[block]
        while todo:
            take, used_bytes = 0, 0
            while take < len(todo):
                more = rec_bytes + walk_bytes * len(todo[take][3])
                if take and used_bytes + more > cap:
                    break
                take, used_bytes = take + 1, used_bytes + more
            chunk, todo = todo[:take], todo[take:]
            sel = torch.tensor([s for g in chunk for s in g[3]], dtype=torch.int64)
            rows = torch.tensor([r for r, g in enumerate(chunk) for _ in g[3]], dtype=torch.int64)
            rec = record_cone(
                graph,
                images,
                node.name,
                torch.tensor([g[1] for g in chunk], device=images.device),
                torch.tensor([g[2] for g in chunk], dtype=torch.int64),
                masks,
                block=block,
                max_bytes=max_bytes,
            )
            _, a, _ = project_recorded(
                graph,
                rec,
                node.name,
                rows,
                feature[sel],
                mode="position",
                rule=rule,
                unpool=unpool,
                position=pos[sel],
                max_bytes=max_bytes,
                walk="cone",
                windows=windows,
                into=proj,
                into_rows=sel,
            )
            act = _place(act, sel, a, idx.numel())
    assert act is not None  # at least one seed, so one chunk
    return proj, act


def _check(graph: Graph, images: torch.Tensor, seeds: Seeds, mode: str):
    """Validated ``(node, image_index, feature, position)`` of one :class:`Seeds`."""
    node = graph.check_seed(seeds.layer)
    info = graph.info(node.name)
    what = f"layer {seeds.layer}" if isinstance(seeds.layer, int) else f"node '{node.name}'"
    idx, feat, pos = check_seeds(
        seeds.feature,
        seeds.image_index,
        seeds.position,
        mode,
        int(images.shape[0]),
        info.features,
        info.output_size,
        what,
    )
    return node, idx, feat, pos


def deconvolve_many(
    model: nn.Module,
    images: torch.Tensor,
    seeds: Sequence[Seeds],
    *,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    graph: Optional[Graph] = None,
    max_bytes: int = MAX_BYTES,
) -> List[Projection]:
    """Project seeds on several nodes, each the cheapest way (:func:`plan`).

    ``images``: model input ``(B, C, H, W)``; ``seeds``: one :class:`Seeds` per
    node. Nodes whose seeds read whole recordings share **one** forward pass of
    the images they use, as far as the deepest of them needs; seeds at known
    positions of shallow nodes record their cones instead. Returns one
    :class:`~deconvviz.engine.deconv.projection.Projection` per :class:`Seeds`, in order
    (``projections`` ``(S, C, H, W)`` in the model's input space, raw and signed;
    ``layer`` as given).
    """
    check_choice("mode", mode, MODES)
    check_choice("rule", rule, RULES)
    check_choice("unpool", unpool, UNPOOLS)
    graph = graph_for(model, images, graph)
    checked = [_check(graph, images, s, mode) for s in seeds]
    masks = rule != "deconvnet"
    plans, grouped = [], []
    for node, idx, _, pos in checked:
        groups, cost = _cone_groups(graph, node, idx, pos) if mode == "position" else (None, None)
        plans.append(plan(graph, node.name, mode, idx.numel(), torch.unique(idx).numel(), cost))
        grouped.append(groups)
    whole = [c for c, p in zip(checked, plans) if p.record == "whole"]
    rec = None
    if whole:
        used = torch.unique(torch.cat([c[1] for c in whole]))
        rec = record_whole(graph, images[used.to(images.device)], [c[0].name for c in whole], masks)
    results = []
    with torch.no_grad():
        for s, (node, idx, feat, pos), how, groups in zip(seeds, checked, plans, grouped):
            if how.record == "cone":
                proj, act = project_positions(
                    graph,
                    images,
                    node.name,
                    idx,
                    feat,
                    pos,
                    rule=rule,
                    unpool=unpool,
                    max_bytes=max_bytes,
                    how=how,
                    groups=groups,
                )
                where = pos
            else:
                assert rec is not None  # recorded above for every "whole" plan
                rows = torch.searchsorted(used, idx)
                proj, act, where = project_recorded(
                    graph,
                    rec,
                    node.name,
                    rows,
                    feat,
                    mode=mode,
                    rule=rule,
                    unpool=unpool,
                    position=pos,
                    max_bytes=max_bytes,
                    walk=how.walk,
                )
            results.append(
                Projection(
                    projections=proj,
                    image_index=idx,
                    feature=feat,
                    activation=act.cpu(),
                    position=where.cpu(),
                    layer=s.layer,
                    mode=mode,
                    rule=rule,
                    unpool=unpool,
                )
            )
    return results


def deconvolve(
    model: nn.Module,
    images: torch.Tensor,
    layer: Layer,
    feature: Union[int, Sequence[int], torch.Tensor],
    image_index: Optional[Union[Sequence[int], torch.Tensor]] = None,
    *,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    position: Optional[torch.Tensor] = None,
    graph: Optional[Graph] = None,
    max_bytes: int = MAX_BYTES,
) -> Projection:
    """Project many (image, channel) seeds of one layer in batched passes.

    ``images``: model input ``(B, C, H, W)``. ``layer``: a node name as
    torchvision names it (``"layer2.1.relu_1"``, ``"classifier.6"`` for a logit;
    see ``deconvviz layers --all``) or, on a plain conv stack, a block number
    (block L ends after the L-th conv's ReLU and pool). Seed ``s`` is channel
    ``feature[s]`` of image ``image_index[s]`` (default: one seed per image,
    ``feature`` broadcast). ``mode``: ``"max"`` seeds the channel's strongest
    activation (the paper), ``"map"`` its whole map, ``"position"`` its value at
    ``position`` ``(S, 2)``. ``rule``: ``"deconvnet"`` (ReLUs rectify the signal),
    ``"guided"`` or ``"gradient"``; ``unpool``: ``"switches"`` or ``"nearest"``.
    ``graph``: the model's :class:`~deconvviz.engine.net.graph.Graph` (built here if
    not given). Seeds at one position go back inside their receptive fields
    only, and record only them where that costs less. Returns a
    :class:`~deconvviz.engine.deconv.projection.Projection` with full-image
    ``projections`` ``(S, C, H, W)``.
    """
    return deconvolve_many(
        model,
        images,
        [Seeds(layer, feature, image_index, position)],
        mode=mode,
        rule=rule,
        unpool=unpool,
        graph=graph,
        max_bytes=max_bytes,
    )[0]


def project(
    model: nn.Module,
    images: torch.Tensor,
    layer: Layer,
    feature: int,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    graph: Optional[Graph] = None,
) -> torch.Tensor:
    """Project channel ``feature`` of ``layer`` back to pixels for each image.

    ``images`` ``(B, C, H, W)`` (e.g. from :func:`deconvviz.load_data`) -> raw,
    signed projections ``(B, C, H, W)``, one per image (zero where the channel
    does not fire). ``mode``: ``"max"`` (Zeiler & Fergus, arXiv 1311.2901) or
    ``"map"``; ``layer``, ``rule`` and ``unpool`` as in :func:`deconvolve`.
    """
    if mode == "position":
        raise DeconvvizError("project() takes mode 'max' or 'map'; use deconvolve() for positions")
    return deconvolve(
        model, images, layer, feature, mode=mode, rule=rule, unpool=unpool, graph=graph
    ).projections
