"""Measures used by the research figures: rank correlation, cosine similarity,
each image's strongest feature, and randomised copies of a network."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .net.layers import conv_stack, get_layer

__all__ = ["rank_correlation", "cosine_similarity", "randomized_copy", "strongest_features"]


@torch.no_grad()
def strongest_features(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Each image's feature of ``layer`` with the largest single activation: ``(B,)`` int64
    for model input ``x`` ``(B, 3, H, W)``."""
    info = get_layer(model, layer, tuple(x.shape[-2:]))
    was_training = model.training
    model.eval()
    try:
        out = conv_stack(model)[: info.end](x)
    finally:
        model.train(was_training)
    return out.flatten(2).amax(dim=2).argmax(dim=1)


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks from 1 with ties given their average rank (as in Spearman's coefficient)."""
    uniq, inverse, counts = torch.unique(v, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    return (start.double() + (counts.double() + 1) / 2)[inverse]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (ties averaged) of two projections' per-pixel
    magnitudes, ``|x|`` summed over channels; inputs ``(C, H, W)``. NaN if either
    is constant (e.g. all zero). As in Adebayo et al. (2018)."""
    ra = _average_ranks(a.detach().abs().sum(dim=0).reshape(-1).double())
    rb = _average_ranks(b.detach().abs().sum(dim=0).reshape(-1).double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else float("nan")


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two signed projections (any equal shapes); NaN if one is zero."""
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every conv and linear layer re-initialised
    (PyTorch's default initialisation, seeded): the sanity check of Adebayo et
    al. (2018). ``model`` itself is not changed; ``meta`` is copied."""
    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        for m in clone.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    clone.eval()
    return clone
