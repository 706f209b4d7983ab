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

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data.sources import ImageSource, normalize
from ..errors import DeconvvizError
from ..progress import Progress
from .layers import LayerInfo, check_supported, conv_stack, get_layer, list_layers

__all__ = ["TopK", "empty_topk", "merge_topk", "finalize_topk", "scan_topk", "strongest_images",
           "model_dtype", "normalization_of", "layer_infos"]


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
    return TopK(torch.full((features, k), float("-inf"), dtype=torch.float32),
                torch.full((features, k), -1, dtype=torch.int64),
                torch.full((features, k, 2), -1, dtype=torch.int64))


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
    return TopK(activation.gather(1, order), image_index.gather(1, order),
                position.gather(1, order.unsqueeze(-1).expand(-1, -1, 2)))


def merge_topk(a: TopK, b: TopK, k: Optional[int] = None) -> TopK:
    """The best ``k`` (default ``a.k``) of the union of two top-k lists of one layer.

    Associative and commutative as long as an image appears in at most one of
    the inputs (true for disjoint shards): activation descending, then smaller
    image index first.
    """
    if a.activation.shape[0] != b.activation.shape[0]:
        raise ValueError(f"cannot merge top-k lists of {a.activation.shape[0]} and "
                         f"{b.activation.shape[0]} features")
    k = a.k if k is None else k
    return _select(torch.cat([a.activation, b.activation], 1),
                   torch.cat([a.image_index, b.image_index], 1),
                   torch.cat([a.position, b.position], 1), k)


def finalize_topk(top: TopK, num_images: int) -> TopK:
    """Drop the unfilled columns: keep ``min(k, num_images)`` columns.

    Every image is a candidate of every feature, so after a full scan exactly
    ``min(k, N)`` slots per feature are filled.
    """
    keep = min(top.k, int(num_images))
    out = TopK(top.activation[:, :keep].contiguous(), top.image_index[:, :keep].contiguous(),
               top.position[:, :keep].contiguous())
    if keep and int(out.image_index.min()) < 0:  # pragma: no cover - a broken shard layout
        raise RuntimeError("top-k has unfilled slots after a full scan")
    return out


def model_dtype(model: nn.Module) -> torch.dtype:
    p = next(iter(conv_stack(model).parameters()), None)
    return p.dtype if p is not None else torch.float32


def normalization_of(model: nn.Module, mean=None, std=None):
    if mean is not None and std is not None:
        return list(mean), list(std)
    meta = getattr(model, "meta", None) or {}
    norm = meta.get("normalization")
    if not norm:
        raise DeconvvizError("the model carries no normalisation (model.meta['normalization']); "
                             "pass mean and std")
    return list(norm["mean"]), list(norm["std"])


def layer_infos(model: nn.Module, layers: Optional[Sequence[int]],
                 image_size: Tuple[int, int]) -> List[LayerInfo]:
    if not layers:
        infos = list_layers(model, image_size)
        if not infos:
            raise DeconvvizError("the model's conv stack has no Conv2d layer")
        return infos
    return [get_layer(model, int(L), image_size) for L in sorted(set(int(v) for v in layers))]


def scan_topk(model: nn.Module, source: ImageSource, layers: Optional[Sequence[int]] = None,
              k: int = 9, *, batch_size: int = 500, device: Union[str, torch.device] = "cpu",
              progress: Optional[Progress] = None, shard: Optional[Tuple[int, int]] = None,
              start: int = 0, stop: Optional[int] = None, mean=None, std=None
              ) -> Dict[int, TopK]:
    """One pass over ``source[start:stop]``: the top-``k`` images of every feature.

    For each image and feature, the activation is the maximum of the layer's
    block output (after ReLU and pool) over positions, at the first maximum in
    row-major order. Memory holds one batch plus ``features x k`` per layer.
    ``shard=(rank, world)`` scans only batches ``rank, rank + world, ...`` (batch
    boundaries are those of the unsharded scan, so every image is computed in
    the same batch as in one process); image indices stay global.
    Returns ``{layer: TopK}`` with unfilled slots where fewer than ``k`` images
    were seen (see :func:`finalize_topk`). No switches are recorded: the scan
    runs the plain stack.
    """
    if k < 1:
        raise DeconvvizError(f"top k must be at least 1, got {k}")
    if batch_size < 1:
        raise DeconvvizError(f"batch size must be at least 1, got {batch_size}")
    mean, std = normalization_of(model, mean, std)
    infos = layer_infos(model, layers, source.image_size)
    end = max(i.end for i in infos)
    check_supported(model, end)
    modules = list(conv_stack(model))[:end]
    layer_at = {i.end - 1: i for i in infos}
    tops = {i.index: empty_topk(i.features, k) for i in infos}
    stop = len(source) if stop is None else min(int(stop), len(source))
    rank, world = shard if shard is not None else (0, 1)
    dtype = model_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b, offset in enumerate(range(start, stop, batch_size)):
                if b % world != rank:
                    continue
                images = source.read(offset, min(stop, offset + batch_size))
                n = images.shape[0]
                x = normalize(images.to(device), mean, std).to(dtype)
                for m_i, m in enumerate(modules):
                    x = m(x)
                    info = layer_at.get(m_i)
                    if info is None:
                        continue
                    # Reduce at once: a later in-place module must not see changed values.
                    flat = x.reshape(n, x.shape[1], -1)
                    pos = flat.argmax(dim=2)                       # first maximum
                    val = flat.gather(2, pos.unsqueeze(-1)).squeeze(-1).float()
                    if not bool(torch.isfinite(val).all()):
                        raise DeconvvizError(
                            f"layer {info.index} gives non-finite activations on images "
                            f"{offset}..{offset + n - 1}; the checkpoint or the data is damaged")
                    w = x.shape[-1]
                    pos = pos.cpu()
                    cand_pos = torch.stack([pos // w, pos % w], dim=-1).transpose(0, 1)
                    cand_idx = torch.arange(offset, offset + n, dtype=torch.int64)
                    cand = TopK(val.cpu().t(), cand_idx.expand(info.features, n), cand_pos)
                    tops[info.index] = merge_topk(tops[info.index], cand, k)
                if progress is not None:
                    progress.update(n)
    finally:
        model.train(was_training)
    return tops


def strongest_images(model: nn.Module, source: ImageSource, layer, k: int = 1, *,
                     indices: Optional[Sequence[int]] = None, limit: Optional[int] = None,
                     batch_size: int = 500, device: Union[str, torch.device] = "cpu",
                     mean=None, std=None):
    """For every feature of ``layer``: the ``k`` images of ``source`` on which it fires
    most (its maximum over positions), strongest first, ties to the smaller index.

    Scans the images ``indices`` of ``source`` (default: the first ``limit``
    images, or all) in one streaming pass (:func:`scan_topk`). Returns
    ``(activations (F, k') float32, source indices (F, k') int64)`` with
    ``k' = min(k, images scanned)``; with a list of layers, one pass serves them
    all and the result is a dict ``{layer: (activations, indices)}``.
    """
    layers = [layer] if isinstance(layer, int) else list(layer)
    scanned = source if indices is None else source.subset(indices)
    stop = len(scanned) if limit is None or indices is not None else min(int(limit), len(scanned))
    if stop == 0:
        raise DeconvvizError(f"{source.description} has no images to scan")
    tops = scan_topk(model, scanned, layers, k=k, batch_size=batch_size, stop=stop,
                     device=device, mean=mean, std=std)
    back = None if indices is None else torch.as_tensor([int(i) for i in indices])
    result = {}
    for lay, top in tops.items():
        top = finalize_topk(top, stop)
        where = top.image_index
        result[lay] = (top.activation, where if back is None else back[where])
    return result[layers[0]] if isinstance(layer, int) else result
