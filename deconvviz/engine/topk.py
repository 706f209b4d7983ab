"""Streaming top-k search over a data source, and its exact merge (Zeiler & Fergus, Figure 2).

One pass over a data source keeps, for every feature of the chosen layers, the
``k`` images on which the feature fires most (each image counted once per
feature, at its strongest position).

Ranking rule, used everywhere (scan, merge, file): activation descending, then
image index ascending. Within an image, a feature's position is the first
maximum in row-major order. Both make the result deterministic, and make
:func:`merge_topk` associative, so shards scanned by several processes merge to
exactly what one process finds.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import fx, nn

from ..data.source import ImageSource
from ..errors import DeconvvizError
from ..progress import Progress
from .lanes import lanes_for, on_lanes
from .net.execute import execute
from .net.graph import Graph, GraphNode, NodeInfo
from .net.network import Layer, graph_of, layer_key, resolve_infos
from .net.run import run_node

__all__ = [
    "TopK",
    "empty_topk",
    "merge_topk",
    "finalize_topk",
    "scan_topk",
    "strongest_images",
    "model_dtype",
    "normalization_of",
    "layer_infos",
    "scan_batch_size",
]


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


def model_dtype(model: nn.Module) -> torch.dtype:
    p = next(iter(model.parameters()), None)
    return p.dtype if p is not None else torch.float32


def normalization_of(model: nn.Module, mean=None, std=None):
    if mean is not None and std is not None:
        return list(mean), list(std)
    meta = getattr(model, "meta", None) or {}
    norm = meta.get("normalization")
    if not norm:
        raise DeconvvizError(
            "the model carries no normalisation (model.meta['normalization']); pass mean and std"
        )
    return list(norm["mean"]), list(norm["std"])


def layer_infos(
    model: nn.Module, layers, image_size: Tuple[int, int], graph: Optional[Graph] = None
) -> list:
    """Infos of ``layers`` (numbers or node names; see :func:`.network.resolve_infos`);
    ``graph``: the model's traced graph where the caller holds it."""
    return resolve_infos(graph_of(model, image_size, graph=graph), layers)


#: Bytes of the largest activation tensor of one scan batch that :func:`scan_batch_size`
#: aims for. Measured on 2 CPU cores with the bundled CNN (CIFAR-10, 50,000 images,
#: channels-last): batch 128 (16 MiB for conv 1's output) was the fastest of
#: 32..512; larger batches lose to cache misses and to fresh ``mmap`` allocations of
#: every intermediate tensor (beyond glibc's 32 MiB threshold), smaller ones to
#: per-call overhead.
SCAN_BATCH_BYTES = 16 * 2**20
MAX_SCAN_BATCH = 512


def scan_batch_size(
    model: nn.Module,
    image_size: Tuple[int, int],
    layers: Optional[Sequence] = None,
    budget: int = SCAN_BATCH_BYTES,
    graph: Optional[Graph] = None,
) -> int:
    """Images per scan batch for ``model`` at ``image_size``: as many as keep the
    largest output of the nodes ``layers`` need (every node by default) within
    ``budget`` bytes (at least 1, at most :data:`MAX_SCAN_BATCH`). 128 for the
    bundled CNN at 32x32; 1 for VGG-16 at 224x224. ``graph``: the model's traced graph
    where the caller holds it."""
    graph = graph_of(model, image_size, graph=graph)
    elem = torch.finfo(model_dtype(model)).bits // 8
    nodes = graph.nodes if not layers else graph.ancestors([graph.node(n).name for n in layers])
    largest = max(
        [3 * int(image_size[0]) * int(image_size[1])]
        + [math.prod(n.shape) for n in nodes if n.shape and n.op != "constant"]
    )
    return int(max(1, min(MAX_SCAN_BATCH, budget // (largest * elem))))


def batch_size_for(
    model: nn.Module,
    infos,
    image_size: Tuple[int, int],
    budget: int = SCAN_BATCH_BYTES,
    graph: Optional[Graph] = None,
) -> int:
    """:func:`scan_batch_size` for the layers ``infos``."""
    return scan_batch_size(model, image_size, [i.name for i in infos], budget, graph)


def _scan_memory_format(device) -> torch.memory_format:
    # Channels-last convolutions and max pools are about 2x faster on the CPU (oneDNN)
    # and the cuDNN path prefers them too; the values can differ from the default
    # layout's in the last bits, exactly as between two batch sizes, and the projection
    # records its switches in channels-last as well.
    return torch.channels_last


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
            args, kwargs = fx.node.map_arg((n.fx_node.args, n.fx_node.kwargs), lambda _, x=x: x)
            x = run_node(n.fx_node, n.spec, self.graph.model, args, kwargs)
        return x


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
    n_in, n_out = graph.node(node.parents[0]).shape[1:], node.shape[1:]
    for i in range(2):
        seen = {
            o * stride[i] - padding[i] + j * dilation[i]
            for o in range(n_out[i])
            for j in range(kernel[i])
        }
        if not seen.issuperset(range(n_in[i])):
            return False
    return True


class _StreamingTopK:
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
            cand = TopK(val, torch.arange(offset, offset + n).expand(c, n), pos)
            self.top = merge_topk(top, cand, k)
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


def scan_topk(
    model: nn.Module,
    source: ImageSource,
    layers: Optional[Sequence[Layer]] = None,
    k: int = 9,
    *,
    batch_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    progress: Optional[Progress] = None,
    shard: Optional[Tuple[int, int]] = None,
    start: int = 0,
    stop: Optional[int] = None,
    mean=None,
    std=None,
    maxima: Optional[Mapping[Layer, Callable]] = None,
    graph: Optional[Graph] = None,
) -> Dict[Layer, TopK]:
    """One pass over ``source[start:stop]``: the top-``k`` images of every feature.

    For each image and feature, the activation is the maximum of the layer's
    block output (after ReLU and pool) over positions, at the first maximum in
    row-major order. Memory holds one batch plus ``features x k`` per layer.
    ``batch_size``: images per forward pass (default :func:`scan_batch_size`).
    ``shard=(rank, world)`` scans only batches ``rank, rank + world, ...`` (batch
    boundaries are those of the unsharded scan, so every image is computed in
    the same batch as in one process); image indices stay global.
    Returns ``{layer: TopK}`` with unfilled slots where fewer than ``k`` images
    were seen (see :func:`finalize_topk`). No switches are recorded: the scan
    runs the plain stack, in channels-last memory format, under
    ``torch.inference_mode``, reading every batch into the same buffers.
    ``maxima``: ``{layer: callable}`` (e.g. a
    :class:`~deconvviz.engine.statistics.MaximaRecorder`) called with every batch's
    per-image maxima ``(F, n)`` float32 and the batch's first image index, in the
    same pass. ``graph``: the model's traced graph where the caller holds it (a
    command makes it once and hands it down).
    """
    if k < 1:
        raise DeconvvizError(f"top k must be at least 1, got {k}")
    if batch_size is not None and batch_size < 1:
        raise DeconvvizError(f"batch size must be at least 1, got {batch_size}")
    mean, std = normalization_of(model, mean, std)
    graph = graph_of(model, source.image_size, graph=graph)
    infos = resolve_infos(graph, layers)
    if batch_size is None:
        batch_size = batch_size_for(model, infos, source.image_size, graph=graph)
    # Each layer's maxima from the node its tail starts from (MaxTail), where no other
    # layer needs the tail's nodes.
    tails: Dict[Layer, Optional[MaxTail]] = {}
    info_of: Dict[str, list] = {}
    for i in infos:
        others = [j.name for j in infos if j.name != i.name]
        needed = {n.name for n in graph.ancestors(others)}
        source_node, tails[layer_key(i)] = MaxTail.of(graph, i.name, needed)
        info_of.setdefault(source_node, []).append(i)
    names = list(info_of)
    maxima = maxima or {}
    stop = len(source) if stop is None else min(int(stop), len(source))
    rank, world = shard if shard is not None else (0, 1)
    device = torch.device(device)
    mine = [
        (b, offset) for b, offset in enumerate(range(start, stop, batch_size)) if b % world == rank
    ]
    # Lanes where each has at least two batches (see engine.lanes).
    lanes = lanes_for(device, len(mine) // 2)

    def new_tops() -> Dict[Layer, _StreamingTopK]:
        return {
            layer_key(i): _StreamingTopK(
                empty_topk(i.features, k), maxima.get(layer_key(i)), tails[layer_key(i)]
            )
            for i in infos
        }

    # Each lane scans every ``lanes``-th of this process's batches into its own top-k, in
    # the order of the source; the lanes' lists merge exactly (disjoint images).
    shares = [mine[j::lanes] for j in range(lanes)]
    tops = [new_tops() for _ in shares]
    scan = _BatchScan(
        graph,
        source,
        stop,
        info_of,
        names,
        batch_size,
        device,
        model_dtype(model),
        (mean, std),
        progress,
        keep_errors=lanes > 1,
    )
    was_training = model.training
    model.eval()
    try:
        if lanes == 1:
            scan.run(shares[0], tops[0])
        else:
            on_lanes(lambda job: scan.run(*job), list(zip(shares, tops)), lanes, scan.halt)
            if scan.errors:
                raise scan.errors[min(scan.errors)]
    finally:
        model.train(was_training)
    merged = {L: t.top for L, t in tops[0].items()}
    for lane in tops[1:]:
        merged = {L: merge_topk(merged[L], lane[L].top, k) for L in merged}
    return merged


class _BatchScan:
    """The forward passes of a scan, batch by batch, into running top-k lists: :meth:`run`
    scans one share of the batches (one lane's). With ``keep_errors`` (lanes) an error is
    kept in ``errors`` by batch number and the other lanes finish the batches before it."""

    def __init__(
        self,
        graph: Graph,
        source: ImageSource,
        stop: int,
        info_of: Dict[str, list],
        names: Sequence[str],
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        norm,
        progress: Optional[Progress],
        keep_errors: bool = False,
    ):
        self.graph, self.source, self.stop = graph, source, stop
        self.info_of, self.names = info_of, names
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.mean, self.std = norm
        self.progress = progress
        self.keep_errors = keep_errors
        self.lock = threading.Lock()
        # The first batch that failed (a lane stops at it; the others finish the
        # batches before it, so the error is the one a one-thread scan meets first).
        self.failed_at = math.inf
        self.errors: Dict[int, BaseException] = {}

    def run(self, share: Sequence[Tuple[int, int]], tops: Dict[Layer, _StreamingTopK]) -> None:
        """Scan the batches ``share`` (``(number, first image)``, ascending) into ``tops``."""
        device, fmt = self.device, _scan_memory_format(self.device)
        with torch.inference_mode():
            rows = max((min(self.batch_size, self.stop - o) for _, o in share), default=0)
            # One pixel buffer and one input buffer for the whole scan (pinned for a
            # non-blocking copy to the GPU), instead of fresh ones per batch.
            pix = torch.empty(
                (rows,) + tuple(self.source.shape),
                dtype=torch.uint8,
                pin_memory=device.type == "cuda",
            )
            inp = torch.empty(
                (rows,) + tuple(self.source.shape), dtype=torch.float32, device=device
            ).contiguous(memory_format=fmt)
            m = torch.as_tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            s = torch.as_tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            for b, offset in share:
                if b > self.failed_at:
                    return
                try:
                    n = self._batch(offset, pix, inp, m, s, tops)
                except BaseException as exc:  # kept for the caller, by batch
                    with self.lock:
                        self.errors[b] = exc
                        self.failed_at = min(self.failed_at, b)
                    if not self.keep_errors:
                        raise
                    return
                if self.progress is not None:
                    with self.lock:
                        self.progress.update(n)

    def halt(self) -> None:
        """Every lane stops before its next batch (Ctrl-C)."""
        self.failed_at = -1

    def _batch(self, offset: int, pix, inp, m, s, tops) -> int:
        images = self.source.read(offset, min(self.stop, offset + self.batch_size), out=pix)
        n = images.shape[0]
        # The same operations as data.source.normalize, so the same values.
        x = inp[:n]
        x.copy_(images, non_blocking=True)
        x.div_(255.0).sub_(m).div_(s)
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        info_of = self.info_of

        def reduce(node, value, _switches):
            # At once, as made: a later in-place op must not see changed values.
            for info in info_of.get(node.name, ()):
                tops[layer_key(info)].add(
                    value.reshape(value.shape[0], value.shape[1], *value.shape[2:4] or (1, 1)),
                    offset,
                    info,
                )

        execute(self.graph, x, self.names, visit=reduce, reuse=True)
        if self.device.type == "cuda":  # the pixel buffer is refilled next batch
            torch.cuda.current_stream(self.device).synchronize()
        return n


def strongest_images(
    model: nn.Module,
    source: ImageSource,
    layer,
    k: int = 1,
    *,
    indices: Optional[Sequence[int]] = None,
    limit: Optional[int] = None,
    batch_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    mean=None,
    std=None,
):
    """For every feature of ``layer``: the ``k`` images of ``source`` on which it fires
    most (its maximum over positions), strongest first, ties to the smaller index.

    Scans the images ``indices`` of ``source`` (default: the first ``limit``
    images, or all) in one streaming pass (:func:`scan_topk`). Returns
    ``(activations (F, k') float32, source indices (F, k') int64)`` with
    ``k' = min(k, images scanned)``; with a list of layers, one pass serves them
    all and the result is a dict ``{layer: (activations, indices)}``.
    """
    single = isinstance(layer, (int, str))
    layers = [layer] if single else list(layer)
    scanned = source if indices is None else source.subset(indices)
    stop = len(scanned) if limit is None or indices is not None else min(int(limit), len(scanned))
    if stop == 0:
        raise DeconvvizError(f"{source.description} has no images to scan")
    tops = scan_topk(
        model,
        scanned,
        layers,
        k=k,
        batch_size=batch_size,
        stop=stop,
        device=device,
        mean=mean,
        std=std,
    )
    back = None if indices is None else torch.as_tensor([int(i) for i in indices])
    result = {}
    for lay, top in tops.items():
        top = finalize_topk(top, stop)
        where = top.image_index
        result[lay] = (top.activation, where if back is None else back[where])
    return result[layers[0]] if single else result
