"""The scan: one pass over a data source that keeps every feature's top k
(:mod:`.topk`) and hands each batch's per-image maxima on (feature statistics).

Batches run in channels-last memory format under ``torch.inference_mode``, into reused
buffers, on lanes on the CPU (:mod:`.lanes`); a layer that ends in ReLUs and covering max
pools is reduced before them (:class:`~.topk.MaxTail`). :func:`strongest_images` is the
same scan for one layer and a few images per feature.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data.source import ImageSource
from ..errors import DeconvvizError
from ..progress import Progress
from .lanes import lanes_for, on_lanes
from .net.execute import execute
from .net.graph import Graph
from .net.network import Layer, graph_of, layer_key, resolve_infos
from .topk import MaxTail, StreamingTopK, TopK, empty_topk, finalize_topk, merge_topk

__all__ = [
    "scan_topk",
    "strongest_images",
    "model_dtype",
    "normalization_of",
    "layer_infos",
    "scan_batch_size",
    "batch_size_for",
    "SCAN_BATCH_BYTES",
    "MAX_SCAN_BATCH",
]


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
    row-major order. Memory holds one batch per lane (on the CPU one per intra-op
    thread, :mod:`.lanes`) plus ``features x k`` per layer and lane.
    ``batch_size``: images per forward pass (default :func:`scan_batch_size`).
    ``shard=(rank, world)`` scans only batches ``rank, rank + world, ...`` (batch
    boundaries are those of the unsharded scan, so every image is computed in
    the same batch as in one process); image indices stay global.
    Returns ``{layer: TopK}`` with unfilled slots where fewer than ``k`` images
    were seen (see :func:`finalize_topk`). No switches are recorded: the scan
    runs the plain stack, in channels-last memory format, under
    ``torch.inference_mode``, each lane reading its batches into the same buffers.
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

    def new_tops() -> Dict[Layer, StreamingTopK]:
        return {
            layer_key(i): StreamingTopK(
                empty_topk(i.features, k), maxima.get(layer_key(i)), tails[layer_key(i)]
            )
            for i in infos
        }

    scan = _BatchScan(
        graph,
        source,
        stop,
        info_of,
        names,
        max(0, min(batch_size, stop - start)),
        batch_size,
        device,
        model_dtype(model),
        (mean, std),
        progress,
        new_tops,
    )
    was_training = model.training
    model.eval()
    try:
        # Batches in the source's order, each lane taking the next (so each lane's list
        # sees its batches in order); the lanes' lists merge exactly (disjoint images).
        with torch.inference_mode():
            on_lanes(scan.batch, mine, lanes)
    finally:
        model.train(was_training)
    lists = list(scan.lanes.values()) or [new_tops()]
    merged = {L: t.top for L, t in lists[0].items()}
    for lane in lists[1:]:
        merged = {L: merge_topk(merged[L], lane[L].top, k) for L in merged}
    return merged


class _BatchScan:
    """The forward passes of a scan, one batch per call of :meth:`batch`, into the running
    top-k lists of the lane (thread) that runs it; each lane fills its own buffers."""

    def __init__(
        self,
        graph: Graph,
        source: ImageSource,
        stop: int,
        info_of: Dict[str, list],
        names: Sequence[str],
        rows: int,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        norm,
        progress: Optional[Progress],
        new_tops: Callable[[], Dict[Layer, StreamingTopK]],
    ):
        self.graph, self.source, self.stop = graph, source, stop
        self.info_of, self.names = info_of, names
        self.rows, self.batch_size, self.device, self.dtype = rows, batch_size, device, dtype
        self.mean, self.std = norm
        self.progress = progress
        self.new_tops = new_tops
        self.lock = threading.Lock()
        self.lanes: Dict[int, Dict[Layer, StreamingTopK]] = {}  # by thread: its lists
        self._buffers: Dict[int, tuple] = {}

    def _lane(self) -> Tuple[tuple, Dict[Layer, StreamingTopK]]:
        """This thread's buffers and lists, made on its first batch: one pixel buffer and
        one input buffer for the whole scan (pinned for a non-blocking copy to the GPU),
        instead of fresh ones per batch."""
        me = threading.get_ident()
        if me not in self._buffers:
            device, shape = self.device, (self.rows,) + tuple(self.source.shape)
            pix = torch.empty(shape, dtype=torch.uint8, pin_memory=device.type == "cuda")
            inp = torch.empty(shape, dtype=torch.float32, device=device).contiguous(
                memory_format=_scan_memory_format(device)
            )
            m = torch.as_tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            s = torch.as_tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            with self.lock:
                self._buffers[me] = (pix, inp, m, s)
                self.lanes[me] = self.new_tops()
        return self._buffers[me], self.lanes[me]

    def batch(self, item: Tuple[int, int]) -> None:
        """Scan batch ``item`` (``(number, first image)``) into this lane's lists."""
        (pix, inp, m, s), tops = self._lane()
        n = self._batch(item[1], pix, inp, m, s, tops)
        if self.progress is not None:
            with self.lock:
                self.progress.update(n)

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
