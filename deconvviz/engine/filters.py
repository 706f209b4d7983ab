"""First-layer diagnostics (Zeiler & Fergus, arXiv 1311.2901, section 4.1 and Figure 6):
filters sorted by their RMS, and the features that never fire on a data source.

The paper found first-layer filters of very different scale, a few dominating,
and clipped their RMS during training (:mod:`deconvviz.models.constraints`,
``deconvviz train --clip-filter-rms``). A filter is one output channel of the
layer's ``Conv2d`` weight; a feature that never fires has a block output (after
ReLU and pool) whose maximum over positions is 0 (at most 0) on every image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from ..data.source import ImageSource
from ..errors import DeconvvizError
from ..models.constraints import filter_rms
from .net.layers import conv_stack, get_layer
from .net.network import graph_of
from .scan import scan_topk
from .topk import finalize_topk

__all__ = ["LayerFilters", "layer_filters", "DeadFeatures", "dead_features", "filter_rms"]


@dataclass
class LayerFilters:
    """The filters of one conv layer: ``weight`` ``(F, C, kh, kw)`` (a detached
    float64 copy, feature order), ``rms`` ``(F,)`` float64 and ``order`` ``(F,)``
    int64, the features by RMS descending (ties: smaller feature first)."""

    layer: int
    path: str
    weight: torch.Tensor
    rms: torch.Tensor
    order: torch.Tensor


def layer_filters(model: nn.Module, layer: int) -> LayerFilters:
    """:class:`LayerFilters` of conv layer ``layer`` (from 1) of ``model``."""
    info = get_layer(model, layer)
    conv = conv_stack(model)[info.start]
    weight = conv.weight.detach().to("cpu", torch.float64).clone()
    rms = filter_rms(weight)
    order = torch.argsort(-rms, stable=True)
    return LayerFilters(layer=info.index, path=info.path, weight=weight, rms=rms, order=order)


@dataclass
class DeadFeatures:
    """``max_activation`` ``(F,)`` float32: each feature's largest block-output value
    over all scanned images; ``dead`` ``(k,)`` int64 the features whose maximum is
    at most 0 (they never fire); ``num_images`` how many images were scanned."""

    layer: int
    max_activation: torch.Tensor
    dead: torch.Tensor
    num_images: int


def dead_features(
    model: nn.Module,
    source: ImageSource,
    layer: int,
    *,
    limit: Optional[int] = None,
    batch_size: int = 500,
    device: Union[str, torch.device] = "cpu",
) -> DeadFeatures:
    """Features of ``layer`` that never fire on ``source`` (its first ``limit`` images,
    or all), from one streaming pass of the report's scan
    (:func:`~deconvviz.engine.scan.scan_topk` with ``k = 1``)."""
    graph = graph_of(model, source.image_size)
    get_layer(model, layer, graph=graph)
    stop = len(source) if limit is None else min(int(limit), len(source))
    if stop < 1:
        raise DeconvvizError(f"{source.description} has no images to scan")
    top = finalize_topk(
        scan_topk(
            model,
            source,
            [layer],
            k=1,
            stop=stop,
            batch_size=batch_size,
            device=device,
            graph=graph,
        )[layer],
        stop,
    )
    best = top.activation[:, 0]
    return DeadFeatures(
        layer=layer, max_activation=best, dead=torch.nonzero(best <= 0).view(-1), num_images=stop
    )
