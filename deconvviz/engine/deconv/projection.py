"""What a projection is and how its seeds are chosen and checked (Zeiler & Fergus, arXiv 1311.2901).

:class:`Projection` is the public result; :data:`RULES`, :data:`UNPOOLS` and
:data:`MODES` (:mod:`..variants`) the variants of the one reverse pass; :func:`check_seeds` the
one seed check every entry point goes through; :func:`seed_maps` and
:func:`max_positions` choose the seeded values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

from ...errors import DeconvvizError
from ..variants import MODES, RULES, UNPOOLS

__all__ = [
    "RULES",
    "UNPOOLS",
    "MODES",
    "Projection",
    "check_choice",
    "check_seeds",
    "seed_maps",
    "max_positions",
]


@dataclass
class Projection:
    """Result of a batched projection of S seeds.

    ``projections``: raw, signed ``(S, 3, H, W)`` in the model's input space;
    ``image_index``: ``(S,)`` index into the batch of images; ``feature``: ``(S,)``;
    ``activation``: ``(S,)`` the seeded activation (its maximum for ``mode="map"``);
    ``position``: ``(S, 2)`` (row, col) in the layer's output of that activation;
    ``layer``: the layer as given (a block number or a node name).
    """

    projections: torch.Tensor
    image_index: torch.Tensor
    feature: torch.Tensor
    activation: torch.Tensor
    position: torch.Tensor
    layer: Union[int, str]
    mode: str
    rule: str
    unpool: str


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise DeconvvizError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _as_index(v, n: int) -> torch.Tensor:
    """A 1-D int64 tensor; a single value is broadcast to ``n`` entries."""
    t = torch.as_tensor(v, dtype=torch.int64).reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n).clone()
    return t


def check_seeds(
    feature,
    image_index,
    position,
    mode: str,
    batch: int,
    features: int,
    output_size: Tuple[int, int],
    what: str,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(image_index, feature, position)`` of S seeds, checked with one-line errors.

    One seed per image by default (``image_index`` None), a single feature or
    position broadcast; checked against ``batch`` images, ``features`` channels
    and the ``output_size`` ``(h, w)`` of ``what`` (``"layer 2"``, ``"node
    'layer1.0.relu'"``). ``position`` ``(S, 2)`` only for ``mode="position"``.
    """
    idx = (
        torch.arange(batch)
        if image_index is None
        else torch.as_tensor(image_index, dtype=torch.int64).reshape(-1)
    )
    feat = _as_index(feature, idx.numel())
    if feat.numel() != idx.numel():
        raise DeconvvizError(f"{feat.numel()} features for {idx.numel()} images")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= batch):
        raise DeconvvizError(f"image index out of range 0..{batch - 1}")
    if feat.numel() and (int(feat.min()) < 0 or int(feat.max()) >= features):
        bad = int(feat.max()) if int(feat.max()) >= features else int(feat.min())
        raise DeconvvizError(
            f"feature {bad} is out of range: {what} has features "
            f"0..{features - 1} (see 'deconvviz layers')"
        )
    if mode != "position":
        return idx, feat, None
    if position is None and tuple(output_size) != (1, 1):
        raise DeconvvizError("mode 'position' needs a position (row, col)")
    pos = torch.as_tensor(position if position is not None else (0, 0), dtype=torch.int64).reshape(
        -1, 2
    )
    if pos.shape[0] == 1 and idx.numel() > 1:
        pos = pos.expand(idx.numel(), 2)
    if pos.shape[0] != idx.numel():
        raise DeconvvizError(f"{pos.shape[0]} positions for {idx.numel()} seeds")
    oh, ow = output_size
    if idx.numel() and (
        pos[:, 0].min() < 0 or pos[:, 0].max() >= oh or pos[:, 1].min() < 0 or pos[:, 1].max() >= ow
    ):
        raise DeconvvizError(f"position out of range: {what} output is {oh}x{ow}")
    return idx, feat, pos


def max_positions(output: torch.Tensor, image_index: torch.Tensor, feature: torch.Tensor):
    """First row-major maximum of each seed's map: ``(flat, activation, (row, col))``."""
    w = output.shape[-1]
    flat = output[image_index, feature].flatten(1)
    where = flat.argmax(dim=1)
    act = flat.gather(1, where.view(-1, 1)).view(-1)
    return where, act, torch.stack([where // w, where % w], dim=1)


def seed_maps(
    output: torch.Tensor,
    image_index: torch.Tensor,
    feature: torch.Tensor,
    mode: str,
    position: Optional[torch.Tensor] = None,
):
    """Seed maps for a node output ``(B, C, h, w)``: every channel but the chosen one zero.

    ``mode="max"``: only the channel's strongest activation is kept (the paper;
    ties go to the first position in row-major order); ``"map"``: its whole map;
    ``"position"``: the activation at ``position``. Returns
    ``(seeds (S, C, h, w), activation (S,), position (S, 2))``.
    """
    b, c, h, w = output.shape
    s = image_index.shape[0]
    flat = output[image_index, feature].reshape(s, h * w)
    if mode == "position":
        pos = position.to(torch.int64)
        flat_pos = pos[:, 0] * w + pos[:, 1]
    else:
        flat_pos, _, pos = max_positions(output, image_index, feature)
    act = flat.gather(1, flat_pos.view(s, 1)).view(s)
    seeds = output.new_zeros((s, c, h * w))
    rows = torch.arange(s, device=output.device)
    if mode == "map":
        seeds[rows, feature] = flat
    else:
        seeds[rows, feature, flat_pos] = act
    return seeds.view(s, c, h, w), act, pos
