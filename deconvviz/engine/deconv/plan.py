"""How a node's seeds are recorded and walked back, and in what chunks: the planner.

A seed at one position depends on the image only inside its cone
(:meth:`~deconvviz.engine.net.graph.Graph.frames`), so each node's seeds take the
cheapest way, counted in multiply-adds (:func:`macs`): recording each seed's cone or
each distinct image once, walking back inside the cone or over whole maps
(:func:`plan`, a :class:`Plan`). Seeds of one image whose cones overlap share one
recording of a block of positions (:func:`share_cones`). Chunks of recordings and
walks stay under one memory budget (:data:`MAX_BYTES`, estimated by
:func:`pass_bytes`; :func:`chunk_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from ..net.geometry.frames import Frame
from ..net.graph import Graph, GraphNode
from ..net.run import op_weight
from .cone import whole_part
from .record import SIGNAL_BYTES

__all__ = [
    "MAX_BYTES",
    "Plan",
    "plan",
    "macs",
    "block_macs",
    "whole_frames",
    "CHUNK_SEEDS",
    "chunk_bytes",
    "BLOCKS",
    "share_cones",
    "cone_groups",
    "pass_bytes",
]

#: The one memory budget (bytes): a chunk of rows of a recording, or of seeds of a reverse
#: pass, holds at most this much at its peak (an estimate from the frames' sizes).
MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Plan:
    """How one node's seeds go: ``record`` ``"cone"`` or ``"whole"``, ``walk`` likewise."""

    record: str = "whole"
    walk: str = "whole"


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


def whole_frames(graph: Graph, node: str) -> Dict[str, Frame]:
    """The whole maps of every node under ``node``
    (:meth:`~deconvviz.engine.net.graph.Graph.frames` with ``whole``)."""
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


def chunk_bytes(per_seed: int, max_bytes: int) -> int:
    """What one chunk of cone recordings and walks holds at most: :data:`~.record.SIGNAL_BYTES`, or
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
            mine: List[int] = []
            rest: List[int] = []
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


def cone_groups(graph: Graph, node: GraphNode, idx: torch.Tensor, pos: torch.Tensor):
    """``(groups, multiply-adds)``: the seeds at ``pos`` as :func:`share_cones` groups them,
    and what recording their cones costs (the nodes above :func:`~.cone.whole_part` only: those
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
    (``cone_macs``: what recording their cones above :func:`~.cone.whole_part` costs, default
    ``seeds`` cones).

    A cone recording runs what holds a value of the whole image (a gate, and every node
    below it: :func:`~deconvviz.engine.deconv.cone.whole_part`) once per image and the
    rest once per seed inside its cone; a whole recording runs everything once per image."""
    cone = graph.frames(node) if mode != "map" else None
    if cone is None:
        return Plan()
    whole_maps = whole_frames(graph, node)
    whole = macs(graph, whole_maps)
    hybrid = graph.frames(node, hybrid=True)
    walk = "cone" if hybrid is not None and macs(graph, hybrid) < whole else "whole"
    cost = macs(graph, cone)
    if cost >= whole:
        return Plan("whole", walk)
    below = {n.name for n in whole_part(graph, node)}
    above = set(cone) - below
    if cone_macs is None:
        cone_macs = seeds * macs(graph, cone, above)
    by_cone = images * macs(graph, whole_maps, below) + cone_macs
    return Plan("cone" if mode == "position" and by_cone < images * whole else "whole", "cone")


def pass_bytes(graph: Graph, node: str, frames, elem: int, masks: bool) -> Tuple[int, int]:
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
