"""Batched projection of many kept seeds (image, feature, position) of several layers."""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ...data.source import ImageSource, normalize
from ...errors import DeconvvizError
from ..net.graph import Graph
from ..net.network import Layer, graph_of
from ..scan import model_dtype, normalization_of
from ..topk import TopK
from .projecting import project_positions
from .projection import RULES

__all__ = ["project_seeds", "project_topk"]


#: Distinct images one chunk of a layer's seeds reads at most (their pixels stay in memory
#: as model input while the chunk's seeds are projected).
IMAGES_PER_PASS = 64


def project_seeds(
    model: nn.Module,
    images: Dict[int, torch.Tensor],
    tops: Dict[Layer, TopK],
    *,
    rule: str = "deconvnet",
    device: Union[str, torch.device] = "cpu",
    mean=None,
    std=None,
    images_per_pass: Optional[int] = None,
    windows: bool = False,
    first_feature: int = 0,
    graph: Optional[Graph] = None,
) -> Tuple[Dict[Layer, torch.Tensor], Dict[Layer, torch.Tensor]]:
    """Deconvnet projections of every kept seed of several layers, in batched passes.

    ``images`` maps image index to its ``uint8 (3, H, W)`` pixels; ``tops`` maps
    layer (block number or node name) to its :class:`TopK` (no unfilled slots).
    Seed ``(f, j)`` of layer ``L`` is feature ``f`` at ``tops[L].position[f, j]`` of
    image ``tops[L].image_index[f, j]``, projected with that image's own switches.
    Per layer, the seeds of each chunk of ``images_per_pass`` distinct images (64
    by default) go through :func:`~deconvviz.engine.deconv.projecting.project_positions`:
    each image recorded once, or each seed's receptive-field cone only where
    that costs less, and every seed back inside its cone.
    Returns ``({L: projections (F, k, 3, H, W) float32}, {L: seeded activation (F, k)})``.
    With ``windows=True`` each projection is its seed's receptive-field window
    ``(F, k, 3, rf_h, rf_w)`` (unclipped top-left ``rf_start + position *
    rf_jump``, zero outside the image), made without a full-image projection.
    ``first_feature``: row ``f`` of every :class:`TopK` is feature ``first_feature
    + f`` (a chunk of a layer's features). ``graph``: the model's traced graph where
    the caller holds it (a command makes it once and hands it down).
    """
    mean, std = normalization_of(model, mean, std)
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    dtype = model_dtype(model)
    some = next(iter(images.values()), None)
    shape = tuple(some.shape) if some is not None else (3, 0, 0)
    per_pass = images_per_pass or IMAGES_PER_PASS
    projections, activations = {}, {}
    graph = graph_of(model, shape[1:], graph=graph)
    for L, top in tops.items():
        node = graph.check_seed(L)
        info = graph.info(node.name)
        F_, k = top.image_index.shape
        size = tuple(info.rf_size) if windows else tuple(shape[1:])
        projections[L] = torch.zeros((F_, k, shape[0]) + size, dtype=torch.float32)
        activations[L] = torch.zeros((F_, k), dtype=torch.float32)
        flat_idx = top.image_index.reshape(-1)
        wanted = torch.unique(flat_idx)  # sorted
        for c0 in range(0, wanted.numel(), per_pass):
            chunk = wanted[c0 : c0 + per_pass]
            sel = torch.isin(flat_idx, chunk).nonzero().view(-1)
            local = torch.searchsorted(chunk, flat_idx[sel])
            pix = torch.stack([images[int(i)] for i in chunk])
            x = normalize(pix.to(device, non_blocking=True), mean, std).to(dtype)
            pos = top.position.reshape(-1, 2)[sel].to(device)
            feat = (sel // k + first_feature).to(device)
            with torch.no_grad():
                proj, act = project_positions(
                    graph, x, node.name, local.to(device), feat, pos, rule=rule, windows=windows
                )
            projections[L].view(F_ * k, shape[0], *size)[sel] = proj.float().cpu()
            activations[L].view(-1)[sel] = act.float().cpu()
    return projections, activations


def project_topk(
    model: nn.Module,
    source: ImageSource,
    layer: int,
    top: TopK,
    *,
    rule: str = "deconvnet",
    device: Union[str, torch.device] = "cpu",
    mean=None,
    std=None,
    images: Optional[Dict[int, torch.Tensor]] = None,
    graph: Optional[Graph] = None,
) -> torch.Tensor:
    """Projections ``(F, k, 3, H, W)`` float32 of one layer's kept seeds (see
    :func:`project_seeds`). ``images`` may map image index to its ``uint8 (3, H, W)``
    pixels; they are read from ``source`` otherwise."""
    if images is None:
        wanted = sorted({int(i) for i in top.image_index.reshape(-1).tolist()})
        pix = source.read_indices(wanted)
        images = {i: pix[j] for j, i in enumerate(wanted)}
    return project_seeds(
        model, images, {layer: top}, rule=rule, device=device, mean=mean, std=std, graph=graph
    )[0][layer]
