"""The top k of every feature, and their exact merge (Zeiler & Fergus, Figure 2).

:class:`TopK` holds, for every feature of a layer, the ``k`` images on which it fires most
(each image counted once per feature, at its strongest position); :func:`merge_topk`
merges two lists exactly, and the running list of a scan (:mod:`.scan`) takes each
batch's few newcomers without re-sorting.

Ranking rule, used everywhere (scan, merge, file): activation descending, then
image index ascending. Within an image, a feature's position is the first
maximum in row-major order. Both make the result deterministic, and make
:func:`merge_topk` associative, so shards scanned by several processes (or lanes of one)
merge to exactly what one process finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import fx

from ..errors import DeconvvizError
from .net.graph import Graph, GraphNode, NodeInfo
from .net.run import run_node

__all__ = ["TopK", "empty_topk", "merge_topk", "finalize_topk", "StreamingTopK", "MaxTail"]


@dataclass
class TopK:
    """The ``k`` best (image, position) of every feature of one layer.

    ``activation``: ``(F, k)`` float32, descending per feature (ties: smaller
    image index first); ``image_index``: ``(F, k)`` int64, index in the data
    source's order; ``position``: ``(F, k, 2)`` int64 (row, col) in the layer's
    output. Unfilled slots (fewer than ``k`` images seen) hold activation
    ``-inf``, image index ``-1`` and position ``(-1, -1)``; they rank last.
    """

    activation: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.activation.shape[1])


def empty_topk(features: int, k: int) -> TopK:
    """A :class:`TopK` with every slot unfilled (the identity of :func:`merge_topk`)."""
    return TopK(
        torch.full((features, k), float("-inf"), dtype=torch.float32),
        torch.full((features, k), -1, dtype=torch.int64),
        torch.full((features, k, 2), -1, dtype=torch.int64),
    )


def _rank(activation: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """Column order ``(F, n)`` sorting each row by activation desc, then image index asc.

    Two stable sorts (index first, then value) give a total order that does not
    depend on where candidates sat, which makes merging associative.
    """
    by_index = torch.argsort(image_index, dim=1, stable=True)
    values = activation.gather(1, by_index)
    by_value = torch.argsort(values, dim=1, descending=True, stable=True)
    return by_index.gather(1, by_value)


def _select(activation, image_index, position, k: int) -> TopK:
    order = _rank(activation, image_index)[:, :k]
    return TopK(
        activation.gather(1, order),
        image_index.gather(1, order),
        position.gather(1, order.unsqueeze(-1).expand(-1, -1, 2)),
    )


def merge_topk(a: TopK, b: TopK, k: Optional[int] = None) -> TopK:
    """The best ``k`` (default ``a.k``) of the union of two top-k lists of one layer.

    Associative and commutative as long as an image appears in at most one of
    the inputs (true for disjoint shards): activation descending, then smaller
    image index first.
    """
    if a.activation.shape[0] != b.activation.shape[0]:
        raise ValueError(
            f"cannot merge top-k lists of {a.activation.shape[0]} and "
            f"{b.activation.shape[0]} features"
        )
    k = a.k if k is None else k
    return _select(
        torch.cat([a.activation, b.activation], 1),
        torch.cat([a.image_index, b.image_index], 1),
        torch.cat([a.position, b.position], 1),
        k,
    )


def finalize_topk(top: TopK, num_images: int) -> TopK:
    """Drop the unfilled columns: keep ``min(k, num_images)`` columns.

    Every image is a candidate of every feature, so after a full scan exactly
    ``min(k, N)`` slots per feature are filled.
    """
    keep = min(top.k, int(num_images))
    out = TopK(
        top.activation[:, :keep].contiguous(),
        top.image_index[:, :keep].contiguous(),
        top.position[:, :keep].contiguous(),
    )
    if keep and int(out.image_index.min()) < 0:  # pragma: no cover - a broken shard layout
        raise RuntimeError("top-k has unfilled slots after a full scan")
    return out


class MaxTail:
    """The nodes at the end of a layer that leave each channel's maximum over positions to
    one computation from the node before them: ReLUs (elementwise and monotone:
    ``max(relu(x)) = relu(max(x))``) and max pools whose windows cover every input
    position (a maximum of maxima over windows that cover the map is the map's maximum).

    A scan takes the maximum of the node the tail starts from and skips the tail, except
    on the few planes whose position it needs: the values are those of the layer's own
    map, to the bit (a maximum is exact), and the positions too (the tail runs on those
    planes as in the network). The bundled CNN's layer 2 thus skips its last ReLU and
    pool."""

    def __init__(self, graph: Graph, nodes: Sequence[GraphNode]):
        self.graph, self.nodes = graph, list(nodes)

    @classmethod
    def of(cls, graph: Graph, name: str, needed: set) -> Tuple[str, Optional["MaxTail"]]:
        """``(source, tail)`` of node ``name``: the node the scan runs instead, and the tail
        between (None where there is none). Nodes in ``needed`` (other layers' ancestors)
        run anyway, so the tail stops at them."""
        tail, node = [], graph.node(name)
        while node.name not in needed and _keeps_max(graph, node):
            parent = graph.node(node.parents[0])
            if parent.op in ("input", "constant") or not parent.shape or len(parent.shape) != 3:
                break
            tail.append(node)
            node = parent
        return node.name, (cls(graph, tail[::-1]) if tail else None)

    def values(self, maxima: torch.Tensor) -> torch.Tensor:
        """The layer's maxima from the source's (any shape): its ReLUs applied."""
        for n in self.nodes:
            if n.op != "maxpool":
                maxima = run_node(n.fx_node, n.spec, self.graph.model, (maxima,), {})
        return maxima

    def planes(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's maps ``(P, 1, h, w)`` from the source's planes ``(P, 1, H, W)``."""
        for n in self.nodes:
            args, kwargs = _fed(n, x)
            x = run_node(n.fx_node, n.spec, self.graph.model, args, kwargs)
        return x


def _fed(node: GraphNode, x: torch.Tensor):
    """``node``'s args and kwargs with ``x`` for its one signal input."""
    return fx.node.map_arg((node.fx_node.args, node.fx_node.kwargs), lambda _: x)


def _keeps_max(graph: Graph, node: GraphNode) -> bool:
    """Whether ``node`` passes each channel's maximum over positions on (see
    :class:`MaxTail`)."""
    if len(node.parents) != 1 or len(node.fx_node.all_input_nodes) != 1 or not node.shape:
        return False
    if node.op in ("relu", "relu6"):
        return True
    params = graph.window_params(node) if node.op == "maxpool" else None
    if params is None:
        return False
    kernel, stride, padding, dilation = params
    parent = graph.node(node.parents[0]).shape
    if not parent:
        return False
    n_in, n_out = parent[1:], node.shape[1:]
    for i in range(2):
        seen = {
            o * stride[i] - padding[i] + j * dilation[i]
            for o in range(n_out[i])
            for j in range(kernel[i])
        }
        if not seen.issuperset(range(n_in[i])):
            return False
    return True


class StreamingTopK:
    """The running top-k of one layer, merged batch by batch without re-sorting.

    Every image of a new batch has a larger index than every kept one (the scan
    goes forward through the source), so on equal activations the kept entry
    wins; a candidate must beat the k-th kept activation *strictly* to enter.
    After the first batches few do, so each batch costs one max-reduction of
    the block output, one comparison per (image, feature), and a small sort of
    the features that have a newcomer. The result equals :func:`merge_topk` of
    all candidates exactly (the test against brute force checks it).
    """

    def __init__(self, top: TopK, maxima=None, tail: Optional["MaxTail"] = None):
        self.top = top
        self.last_index = int(top.image_index.max()) if top.image_index.numel() else -1
        self.maxima = maxima  # called with every batch's (F, n) maxima (engine.statistics)
        # With a tail, ``add`` is given the output of the node the tail starts from.
        self.tail = tail

    def add(self, block_out: torch.Tensor, offset: int, info: NodeInfo) -> None:
        n, c, h, w = block_out.shape
        if block_out.is_contiguous(memory_format=torch.channels_last):
            planes = block_out.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view
            val = planes.amax(dim=1)  # (n, F)
        else:
            planes = None
            val = block_out.reshape(n, c, h * w).amax(dim=2)
        if self.tail is not None:
            val = self.tail.values(val)
        val = val.float().t().cpu()  # (F, n)
        v = val.numpy()
        if not np.isfinite(v).all():
            raise DeconvvizError(
                f"{info.describe()} gives non-finite activations on images "
                f"{offset}..{offset + n - 1}; the checkpoint or the data is damaged"
            )
        if self.maxima is not None:
            self.maxima(val, offset)
        top = self.top
        k = top.k
        if offset <= self.last_index:  # not a forward scan: the general exact merge
            pos = self._positions(
                block_out,
                planes,
                torch.arange(n).expand(c, n),
                torch.arange(c).view(-1, 1).expand(c, n),
            )
            self.top = merge_topk(
                top, TopK(val, torch.arange(offset, offset + n).expand(c, n), pos), k
            )
            self.last_index = max(self.last_index, offset + n - 1)
            return
        self.last_index = offset + n - 1
        # The few hits of a batch merge in numpy: on arrays this small its calls cost a
        # fraction of torch's, and the sorts are the same stable ones.
        act = top.activation.numpy()
        hit = v > act[:, k - 1 : k]  # (F, n)
        rows = np.flatnonzero(hit.any(axis=1))
        if rows.size == 0:
            return
        r = np.arange(rows.size)[:, None]
        # The batch's own best (at most k) of each hit feature: value descending, ties
        # to the earlier image (stable sort); entries that cannot enter are -inf.
        cand = np.where(hit[rows], v[rows], np.float32(-np.inf))
        b_col = np.argsort(-cand, axis=1, kind="stable")[:, : min(k, n)]
        # Kept entries first: a stable sort keeps them ahead of equal newcomers.
        m_val = np.concatenate([act[rows], cand[r, b_col]], axis=1)
        order = np.argsort(-m_val, axis=1, kind="stable")[:, :k]
        is_new = order >= k
        col = np.where(is_new, b_col[r, np.clip(order - k, 0, None)], 0)
        kept_at = np.minimum(order, k - 1)
        index = top.image_index.numpy()
        position = top.position.numpy()
        new_idx = np.where(is_new, col + offset, index[rows[:, None], kept_at])
        new_pos = position[rows[:, None], kept_at]
        r_new, j_new = np.nonzero(is_new)
        if r_new.size:
            new_pos[r_new, j_new] = self._positions(
                block_out,
                planes,
                torch.from_numpy(col[r_new, j_new]),
                torch.from_numpy(rows[r_new]),
            ).numpy()
        act[rows] = m_val[r, order]
        index[rows] = new_idx
        position[rows] = new_pos

    def _positions(self, block_out, planes, image, feature) -> torch.Tensor:
        """(row, col) of the first row-major maximum of planes ``(image, feature)`` (of the
        layer's map: through the tail where there is one)."""
        h, w = block_out.shape[-2:]
        dev = block_out.device
        if planes is not None:
            flat = planes[image.to(dev), :, feature.to(dev)]  # (..., h*w)
        else:
            flat = block_out[image.to(dev), feature.to(dev)].flatten(-2)
        if self.tail is not None:
            shape = flat.shape[:-1]
            maps = self.tail.planes(flat.reshape(-1, 1, h, w))
            w = maps.shape[-1]
            flat = maps.reshape(shape + (-1,))
        where = flat.argmax(dim=-1).cpu()
        return torch.stack([where // w, where % w], dim=-1)
