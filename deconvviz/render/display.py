"""Rendering: the one display normalisation, and figure builders.

Projections are signed and unscaled. For display, **every renderer** uses
:func:`to_display`: each tile is divided by its own robust scale (the 99.5th
percentile of its absolute values over all channels and pixels) so that the
tile's contrast is stretched, then mapped so that **zero is mid-grey**:
``0.5 + 0.5 * x / scale``, clipped to ``[0, 1]``. A tile that is all zero stays
mid-grey (no division by zero). Rendering never modifies its input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..store.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "to_display",
    "to_display_uint8",
    "image_to_display",
    "pairs_figure",
    "save_figure",
    "grid_image",
    "DISPLAY_PERCENTILE",
]

DISPLAY_PERCENTILE = 99.5


def to_display(tiles: torch.Tensor, percentile: float = DISPLAY_PERCENTILE) -> np.ndarray:
    """Signed tiles ``(B, 3, H, W)`` (or ``(3, H, W)``) -> RGB ``(B, H, W, 3)`` in ``[0, 1]``.

    Per tile: centred so that zero is mid-grey, contrast stretched by the tile's
    ``percentile``-th absolute value (values beyond it are clipped).
    """
    t = torch.as_tensor(tiles).detach().to("cpu", torch.float64)
    single = t.ndim == 3
    if single:
        t = t.unsqueeze(0)
    flat = t.abs().reshape(t.shape[0], -1)
    scale = (
        torch.quantile(flat, percentile / 100.0, dim=1)
        if flat.shape[1]
        else torch.zeros(t.shape[0], dtype=t.dtype)
    )
    # Fall back to the maximum where the percentile is zero (sparse projections).
    scale = torch.where(scale > 0, scale, flat.max(dim=1).values if flat.shape[1] else scale)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale)).view(-1, 1, 1, 1)
    out = (0.5 + 0.5 * t / safe).clamp(0.0, 1.0)
    out = torch.where(scale.view(-1, 1, 1, 1) > 0, out, torch.full_like(out, 0.5))
    arr = out.permute(0, 2, 3, 1).numpy()
    return arr[0] if single else arr


def to_display_uint8(
    tiles: np.ndarray, percentile: float = DISPLAY_PERCENTILE
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`to_display` for many tiles at once, as ``uint8``: signed tiles
    ``(B, 3, H, W)`` (any float dtype) -> ``(RGB (B, H, W, 3) uint8, scale (B,) float64)``.

    The same numbers as ``round(255 * to_display(tiles))``, bit for bit, and each
    tile's scale (its ``percentile``-th |value|, the maximum where that is 0), found
    by partial selection instead of a full sort: the web report draws thousands of
    tiles with it.
    """
    t = np.asarray(tiles)
    B = t.shape[0]
    flat = np.abs(t.reshape(B, -1))
    n = flat.shape[1]
    if n == 0:
        return np.zeros((B,) + t.shape[2:] + t.shape[1:2], np.uint8), np.zeros(B)
    # torch.quantile's linear interpolation (and its lerp), on the exact float64 values.
    rank = percentile / 100.0 * (n - 1)
    lo = int(np.floor(rank))
    hi = min(lo + 1, n - 1)
    part = np.partition(flat, [lo, hi] if hi != lo else [lo], axis=1)
    a, b = part[:, lo].astype(np.float64), part[:, hi].astype(np.float64)
    w = rank - lo
    scale = a + w * (b - a) if w < 0.5 else b - (b - a) * (1.0 - w)
    scale = np.where(scale > 0, scale, flat.max(axis=1).astype(np.float64))
    safe = np.where(scale > 0, scale, 1.0).reshape(-1, 1, 1, 1)
    y = t.astype(np.float64) * 0.5
    y /= safe
    y += 0.5
    np.clip(y, 0.0, 1.0, out=y)
    y[scale <= 0] = 0.5
    y *= 255.0
    out = np.rint(y).astype(np.uint8)  # rint rounds half to even, as numpy's round
    return out.transpose(0, 2, 3, 1), scale


def image_to_display(
    images: torch.Tensor,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Images -> RGB ``(B, H, W, 3)`` in ``[0, 1]``.

    ``uint8`` input is divided by 255; float input is de-normalised with
    ``mean``/``std`` when given (model input), else taken as ``[0, 1]`` pixels.
    """
    t = torch.as_tensor(images).detach().to("cpu")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.dtype == torch.uint8:
        x = t.to(torch.float64) / 255.0
    else:
        x = t.to(torch.float64)
        if mean is not None and std is not None:
            m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
            s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
            x = x * s + m
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def pairs_figure(
    images: np.ndarray, projections: np.ndarray, labels: Sequence[str], title: str, columns: int = 3
) -> Figure:
    """Each image beside its projection, labelled; both already in display form
    ``(N, H, W, 3)``. Returns a matplotlib ``Figure`` (not attached to pyplot)."""
    from matplotlib.figure import Figure

    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(2.6 * columns, 1.55 * rows + 0.5), dpi=100)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, columns)
        a, b = axes[r, 2 * c], axes[r, 2 * c + 1]
        a.imshow(images[i], interpolation="nearest")
        b.imshow(projections[i], interpolation="nearest")
        a.set_title(labels[i], fontsize=7)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.01,
        top=1 - 0.5 / (1.55 * rows + 0.5),
        wspace=0.05,
        hspace=0.35,
    )
    return fig


def save_figure(fig: Figure, path: Union[str, Path], dpi: Optional[int] = None) -> Path:
    """Write a figure to PNG atomically (temp file in the folder, then rename)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def grid_image(
    tiles: List[np.ndarray], columns: int, pad: int = 1, background: float = 1.0
) -> np.ndarray:
    """Lay out equal-size RGB tiles ``(H, W, 3)`` in a grid with ``pad``-pixel gaps."""
    if not tiles:
        return np.full((1, 1, 3), background)
    h, w, _ = tiles[0].shape
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = t
    return out
