"""Batched projection of many kept seeds (image, feature, position) of several layers."""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..data.sources import ImageSource, normalize
from ..errors import DeconvvizError
from .deconvnet import (RULES, crop_applies, project_cropped, project_recorded,
                        recorded_forward)
from .layers import list_layers
from .network import graph_of, resolve_info, uses_graph
from .receptive import cut_windows, windows_for
from .topk import TopK, model_dtype, normalization_of

__all__ = ["project_seeds", "project_topk"]


#: Memory the recorded forward pass of one batch of kept images may hold (switches,
#: masks and the pass's largest activations), to size ``images_per_pass``.
RECORD_BYTES = 512 * 2 ** 20


def _record_bytes_per_image(model: nn.Module, info, rule: str, dtype: torch.dtype) -> int:
    """Bytes one image's recorded pass up to ``info`` holds at its peak (an estimate)."""
    elem = torch.finfo(dtype).bits // 8
    total, largest = 0, 0
    for lay in list_layers(model, info.image_size):
        if lay.index > info.index:
            break
        h, w = lay.input_size
        largest = max(largest, lay.in_channels * h * w, lay.features * h * w)
        oh, ow = lay.output_size
        total += lay.features * oh * ow * 8                     # switches (int64)
        if rule != "deconvnet":
            total += lay.features * h * w                       # masks (bool)
    return total + 3 * largest * elem


def project_seeds(model: nn.Module, images: Dict[int, torch.Tensor], tops: Dict[int, TopK], *,
                  rule: str = "deconvnet", device: Union[str, torch.device] = "cpu",
                  mean=None, std=None, images_per_pass: Optional[int] = None,
                  windows: bool = False, first_feature: int = 0
                  ) -> Tuple[Dict[int, torch.Tensor], Dict[int, torch.Tensor]]:
    """Deconvnet projections of every kept seed of several layers, in batched passes.

    ``images`` maps image index to its ``uint8 (3, H, W)`` pixels; ``tops`` maps
    layer to its :class:`TopK` (no unfilled slots). Seed ``(f, j)`` of layer
    ``L`` is feature ``f`` at ``tops[L].position[f, j]`` of image
    ``tops[L].image_index[f, j]``, projected with that image's own switches.
    Per layer, the distinct images of its seeds go through one recorded forward
    pass up to that layer only (in chunks of ``images_per_pass`` images, by
    default as many as fit in :data:`RECORD_BYTES`), and the chunk's seeds go
    back inside their receptive-field windows in batched reverse passes
    (:func:`deconvviz.engine.deconvnet.project_recorded`); where recording each
    seed's receptive-field crop costs less than recording the chunk's images
    whole (shallow layers of large images), the seeds record only their crops
    (:func:`deconvviz.engine.deconvnet.project_cropped`).
    Returns ``({L: projections (F, k, 3, H, W) float32}, {L: seeded activation (F, k)})``.
    With ``windows=True`` each projection is its seed's receptive-field window
    ``(F, k, 3, rf_h, rf_w)`` (unclipped top-left ``rf_start + position *
    rf_jump``, zero outside the image), made by the windowed pass directly
    without a full-image projection, so memory does not grow with the image size.
    ``first_feature``: row ``f`` of every :class:`TopK` is feature ``first_feature
    + f`` (a chunk of a layer's features).
    """
    mean, std = normalization_of(model, mean, std)
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    dtype = model_dtype(model)
    some = next(iter(images.values()), None)
    shape = tuple(some.shape) if some is not None else (3, 0, 0)
    projections, activations = {}, {}
    for L, top in tops.items():
        info = resolve_info(model, L, shape[1:])
        if uses_graph(info):
            projections[L], activations[L] = _project_graph_seeds(
                model, info, images, top, rule=rule, device=device, mean=mean, std=std,
                dtype=dtype, windows=windows, images_per_pass=images_per_pass or 64,
                first_feature=first_feature)
            continue
        F_, k = top.image_index.shape
        size = tuple(info.rf_size) if windows else shape[1:]
        projections[L] = torch.zeros((F_, k, shape[0]) + size, dtype=torch.float32)
        activations[L] = torch.zeros((F_, k), dtype=torch.float32)
        flat_idx = top.image_index.reshape(-1)
        wanted = torch.unique(flat_idx)            # sorted
        per_pass = images_per_pass or max(
            1, RECORD_BYTES // _record_bytes_per_image(model, info, rule, dtype))
        for c0 in range(0, wanted.numel(), per_pass):
            chunk = wanted[c0:c0 + per_pass]
            sel = torch.isin(flat_idx, chunk).nonzero().view(-1)
            local = torch.searchsorted(chunk, flat_idx[sel])
            pix = torch.stack([images[int(i)] for i in chunk])
            x = normalize(pix.to(device, non_blocking=True), mean, std).to(dtype)
            pos = top.position.reshape(-1, 2)[sel].to(device)
            feat = (sel // k + first_feature).to(device)
            with torch.no_grad():
                if crop_applies(model, info, "position", "switches", sel.numel(), chunk.numel()):
                    proj, act, _ = project_cropped(
                        model, x.contiguous(memory_format=torch.channels_last), info,
                        local.to(device), feat, pos, rule=rule,
                        windows=windows)
                else:
                    rec = recorded_forward(model, x, info.end, masks=rule != "deconvnet")
                    proj, act, _ = project_recorded(
                        model, rec, info, local.to(device), feat,
                        mode="position", rule=rule, position=pos, windows=windows)
            projections[L].view(F_ * k, shape[0], *size)[sel] = proj.float().cpu()
            activations[L].view(-1)[sel] = act.float().cpu()
    return projections, activations


def _project_graph_seeds(model, info, images, top: TopK, *, rule, device, mean, std, dtype,
                         windows: bool, images_per_pass: int, first_feature: int):
    """:func:`project_seeds` for one node of any network, on the graph engine: each chunk
    of distinct images is recorded once and its seeds go back together."""
    from .graph_deconv import deconvolve as graph_deconvolve

    graph = graph_of(model, info.image_size)
    F_, k = top.image_index.shape
    channels = next(iter(images.values())).shape[0]
    size = tuple(info.rf_size) if windows else tuple(info.image_size)
    projections = torch.zeros((F_, k, channels) + size, dtype=torch.float32)
    activations = torch.zeros((F_, k), dtype=torch.float32)
    flat_idx = top.image_index.reshape(-1)
    feature = torch.arange(flat_idx.numel()) // k + first_feature
    wanted = torch.unique(flat_idx)
    for c0 in range(0, wanted.numel(), images_per_pass):
        chunk = wanted[c0:c0 + images_per_pass]
        sel = torch.isin(flat_idx, chunk).nonzero().view(-1)
        local = torch.searchsorted(chunk, flat_idx[sel])
        pix = torch.stack([images[int(i)] for i in chunk])
        x = normalize(pix.to(device), mean, std).to(dtype)
        pos = top.position.reshape(-1, 2)[sel]
        proj = graph_deconvolve(model, x, info.name, feature[sel], local, mode="position",
                                rule=rule, position=pos, graph=graph)
        out = proj.projections.float().cpu()
        if windows:
            box, origin = windows_for(info, pos)
            out = cut_windows(out, box, origin, size)
        projections.view(F_ * k, channels, *size)[sel] = out
        activations.view(-1)[sel] = proj.activation.float().cpu()
    return projections, activations


def project_topk(model: nn.Module, source: ImageSource, layer: int, top: TopK, *,
                 rule: str = "deconvnet", device: Union[str, torch.device] = "cpu",
                 mean=None, std=None, images: Optional[Dict[int, torch.Tensor]] = None
                 ) -> torch.Tensor:
    """Projections ``(F, k, 3, H, W)`` float32 of one layer's kept seeds (see
    :func:`project_seeds`). ``images`` may map image index to its ``uint8 (3, H, W)``
    pixels; they are read from ``source`` otherwise."""
    if images is None:
        wanted = sorted({int(i) for i in top.image_index.reshape(-1).tolist()})
        pix = source.read_indices(wanted)
        images = {i: pix[j] for j, i in enumerate(wanted)}
    return project_seeds(model, images, {layer: top}, rule=rule, device=device, mean=mean,
                         std=std)[0][layer]

