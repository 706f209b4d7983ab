"""Filter norms and the paper's feature-scale clipping (Zeiler & Fergus, arXiv 1311.2901, sec. 3).

The paper renormalises, during training, "each filter in the convolutional
layers whose RMS value exceeds a fixed radius of 10^-1 to this fixed radius",
which kept a few first-layer filters from dominating (its Figure 6). A
*filter* is one output channel of a ``Conv2d`` weight, ``weight[f]`` of shape
``(C_in / groups, kh, kw)``; its RMS is ``sqrt(mean(weight[f] ** 2))``. The
bias is not part of the filter.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DeconvvizError

__all__ = ["filter_rms", "clip_filter_rms"]


def filter_rms(weight: torch.Tensor) -> torch.Tensor:
    """RMS of every filter of a conv weight ``(F, C, kh, kw)``: ``(F,)`` float64,
    ``sqrt(mean over (C, kh, kw) of w ** 2)``."""
    if weight.ndim < 2:
        raise DeconvvizError(
            f"a conv weight has at least 2 dimensions (F, C, ...); got shape {tuple(weight.shape)}"
        )
    w = weight.detach().to(torch.float64)
    return w.reshape(w.shape[0], -1).pow(2).mean(dim=1).sqrt()


@torch.no_grad()
def clip_filter_rms(model: nn.Module, max_rms: float) -> int:
    """Rescale, in place, every filter of every ``nn.Conv2d`` of ``model`` whose RMS
    exceeds ``max_rms`` so that its RMS is exactly ``max_rms`` (its direction is
    kept); other filters are untouched. Returns how many filters were rescaled.
    Call it after each optimiser step (``TrainConfig(clip_filter_rms=R)``)."""
    max_rms = float(max_rms)
    if not max_rms > 0:
        raise DeconvvizError(f"the filter RMS radius must be positive; got {max_rms}")
    clipped = 0
    for module in model.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        w = module.weight
        rms = filter_rms(w)
        over = rms > max_rms
        if bool(over.any()):
            factor = torch.where(over, max_rms / rms, torch.ones_like(rms))
            w.mul_(factor.to(w.dtype).view(-1, *([1] * (w.ndim - 1))))
            clipped += int(over.sum())
    return clipped
