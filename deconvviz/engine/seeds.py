"""Batched projection of many kept seeds (image, feature, position) of several layers."""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..data.sources import ImageSource, normalize
from ..errors import DeconvvizError
from .deconvnet import RULES, project_recorded, recorded_forward
from .layers import get_layer
from .receptive import cut_windows, windows_for
from .recording import record
from .topk import TopK, model_dtype, normalization_of

__all__ = ["project_seeds", "project_topk"]


def project_seeds(model: nn.Module, images: Dict[int, torch.Tensor], tops: Dict[int, TopK], *,
                  rule: str = "deconvnet", device: Union[str, torch.device] = "cpu",
                  mean=None, std=None, images_per_pass: int = 1024, windows: bool = False
                  ) -> Tuple[Dict[int, torch.Tensor], Dict[int, torch.Tensor]]:
    """Deconvnet projections of every kept seed of several layers, in batched passes.

    ``images`` maps image index to its ``uint8 (3, H, W)`` pixels; ``tops`` maps
    layer to its :class:`TopK` (no unfilled slots). Seed ``(f, j)`` of layer
    ``L`` is feature ``f`` at ``tops[L].position[f, j]`` of image
    ``tops[L].image_index[f, j]``, projected with that image's own switches.
    Per layer, the distinct images of its seeds go through one recorded forward
    pass up to that layer only (in chunks of ``images_per_pass`` images), and all
    the chunk's seeds go back in one batched reverse pass
    (:func:`deconvviz.deconvnet.project_recorded`).
    Returns ``({L: projections (F, k, 3, H, W) float32}, {L: seeded activation (F, k)})``.
    With ``windows=True`` each projection is cut, chunk by chunk, to its seed's
    receptive-field window (:func:`~deconvviz.engine.receptive.cut_windows`; the
    projection is zero outside it): ``(F, k, 3, rf_h, rf_w)``, so memory does not
    grow with the image size.
    """
    mean, std = normalization_of(model, mean, std)
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    dtype = model_dtype(model)
    some = next(iter(images.values()), None)
    shape = tuple(some.shape) if some is not None else (3, 0, 0)
    projections, activations = {}, {}
    for L, top in tops.items():
        info = get_layer(model, L, shape[1:])
        F_, k = top.image_index.shape
        size = tuple(info.rf_size) if windows else shape[1:]
        projections[L] = torch.zeros((F_, k, shape[0]) + size, dtype=torch.float32)
        activations[L] = torch.zeros((F_, k), dtype=torch.float32)
        flat_idx = top.image_index.reshape(-1)
        wanted = torch.unique(flat_idx)            # sorted
        for c0 in range(0, wanted.numel(), images_per_pass):
            chunk = wanted[c0:c0 + images_per_pass]
            sel = torch.isin(flat_idx, chunk).nonzero().view(-1)
            local = torch.searchsorted(chunk, flat_idx[sel])
            pix = torch.stack([images[int(i)] for i in chunk])
            x = normalize(pix.to(device), mean, std).to(dtype)
            with torch.no_grad(), record(model, stop=info.end, masks=rule != "deconvnet") as rec:
                recorded_forward(model, x, info.end)
                proj, act, _ = project_recorded(
                    model, rec, info, local.to(device), (sel // k).to(device), mode="position",
                    rule=rule, position=top.position.reshape(-1, 2)[sel].to(device))
            proj = proj.float().cpu()
            if windows:
                box, origin = windows_for(info, top.position.reshape(-1, 2)[sel])
                proj = cut_windows(proj, box, origin, size)
            projections[L].view(F_ * k, shape[0], *size)[sel] = proj
            activations[L].view(-1)[sel] = act.float().cpu()
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

