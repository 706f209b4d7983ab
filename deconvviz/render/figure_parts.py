"""Labelled matplotlib figures of tiles, tables and captions for the research figures.

Figures are ``Figure`` objects built directly (never pyplot), so nothing leaks
across calls; tiles are display arrays ``(H, W, 3)`` in ``[0, 1]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.source import ImageSource
from ..store.atomic import atomic_path

__all__ = [
    "tiles_figure",
    "table_figure",
    "save_png",
    "model_caption",
    "short_description",
    "class_name",
    "mode_text",
]


def tiles_figure(
    tiles: np.ndarray,
    labels: Sequence[str],
    title: str,
    columns: int = 8,
    tile_inches: float = 1.05,
):
    """Labelled display tiles ``(N, H, W, 3)`` in a grid of ``columns``.

    Returns a matplotlib ``Figure`` (not attached to pyplot).
    """
    from matplotlib.figure import Figure

    n = len(tiles)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    head = 0.4 + 0.16 * title.count("\n")
    fig = Figure(figsize=(tile_inches * columns, (tile_inches + 0.25) * rows + head), dpi=100)
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        ax = axes[divmod(i, columns)]
        ax.imshow(tiles[i], interpolation="nearest")
        ax.set_title(labels[i], fontsize=6, pad=2)
    total = (tile_inches + 0.25) * rows + head
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - head / total, wspace=0.08, hspace=0.3
    )
    return fig


def table_figure(
    tiles: Sequence[Sequence[np.ndarray]],
    labels: Sequence[Sequence[str]],
    row_names: Sequence[str],
    column_names: Sequence[str],
    title: str,
    tile_inches: float = 1.15,
    tile_aspect: float = 1.0,
):
    """A table of display tiles: ``tiles[r][c]`` ``(H, W, 3)`` with caption ``labels[r][c]``,
    rows named on the left, columns named on top; cells are ``tile_inches`` wide and
    ``tile_aspect`` times as high. Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    rows, cols = len(tiles), len(column_names)
    head = 0.7 + 0.17 * title.count("\n")
    left = 1.25
    longest = max(len(line) for line in title.splitlines()) if title else 0
    width = max(left + tile_inches * cols, 0.062 * longest + 0.3)
    height = (tile_inches * tile_aspect + 0.3) * rows + head
    fig = Figure(figsize=(width, height), dpi=100)
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(tiles[r]) and tiles[r][c] is not None:
                ax.imshow(tiles[r][c], interpolation="nearest")
                ax.set_xlabel(labels[r][c], fontsize=6, labelpad=1)
            if r == 0:
                ax.set_title(column_names[c], fontsize=7, pad=3)
        axes[r, 0].set_ylabel(
            row_names[r], fontsize=6.5, rotation=0, ha="right", va="center", labelpad=4
        )
    fig.subplots_adjust(
        left=left / width,
        right=0.99,
        bottom=0.3 / height,
        top=1 - head / height,
        wspace=0.1,
        hspace=0.45,
    )
    return fig


def save_png(fig, path) -> Path:
    """Write a figure to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def model_caption(model) -> str:
    """``"cifar_cnn.pt, 30 epochs, test accuracy 0.812"`` from the checkpoint metadata."""
    meta = getattr(model, "meta", None) or {}
    parts = [Path(str(meta.get("path", "model"))).name]
    if meta.get("epochs") is not None:
        parts.append(f"{meta['epochs']} epochs")
    if meta.get("test_accuracy") is not None:
        parts.append(f"test accuracy {float(meta['test_accuracy']):.3f}")
    return ", ".join(parts)


def short_description(source: ImageSource) -> str:
    """The data source's description cut to its last two path parts (``cifar10/train``)."""
    parts = Path(source.description).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else source.description


def class_name(source: ImageSource, label: int) -> str:
    """Name of class ``label`` in ``source``; ``"unlabelled"`` for an image without a
    label (``-1``), never a guess such as the network's prediction."""
    return source.class_names[label] if 0 <= label < len(source.class_names) else "unlabelled"


def mode_text(mode: str) -> str:
    return {
        "map": "the whole feature map (as the source material)",
        "max": "the strongest activation only (as Zeiler & Fergus)",
    }.get(mode, mode)
