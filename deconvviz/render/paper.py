"""Figures of the paper's invariance, correspondence and filter experiments
(Zeiler & Fergus, arXiv 1311.2901, Figures 5, 6 and 8, Table 1).

Pure functions of arrays: they build matplotlib ``Figure`` objects directly
(never pyplot), so nothing leaks across calls, and never modify their inputs.
Images are display arrays ``(H, W, 3)`` in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "CurveRow",
    "invariance_figure",
    "correspondence_figure",
    "filter_tiles",
    "filters_figure",
]

_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass
class CurveRow:
    """One transform of the invariance figure: ``amounts`` ``(A,)``; ``distance``
    ``(L, B, A)`` normalised feature distances for the ``layer_names`` of the
    figure; ``probability`` ``(B, A)`` of the true class; ``examples`` ``(k, H, W, 3)``
    the first image transformed by ``example_amounts`` (k of them)."""

    name: str
    unit: str
    amounts: np.ndarray
    distance: np.ndarray
    probability: np.ndarray
    examples: np.ndarray
    example_amounts: Sequence[float]


def _strip(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """Images ``(k, H, W, 3)`` side by side with white gaps."""
    k, h, w, _ = images.shape
    out = np.ones((h, k * (w + pad) - pad, 3))
    for i in range(k):
        out[:, i * (w + pad) : i * (w + pad) + w] = images[i]
    return out


def invariance_figure(
    rows: Sequence[CurveRow], layer_names: Sequence[str], image_names: Sequence[str], title: str
):
    """Zeiler & Fergus Figure 5: one row per transform; columns: example transforms
    of the first image, the normalised distance at each layer, and the probability
    of the true class, one line per image. Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    cols = 2 + len(layer_names)
    head = 0.55 + 0.17 * title.count("\n")
    height = 2.35 * len(rows) + head + 0.5
    fig = Figure(figsize=(3.0 + 2.55 * (cols - 1), height), dpi=100)
    fig.suptitle(title, fontsize=8.5)
    grid = fig.add_gridspec(
        len(rows),
        cols,
        width_ratios=[1.25] + [1.0] * (cols - 1),
        left=0.035,
        right=0.99,
        bottom=0.5 / height + 0.045,
        top=1 - head / height,
        wspace=0.32,
        hspace=0.5,
    )
    for r, row in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(_strip(np.asarray(row.examples)), interpolation="nearest")
        ax.set_xticks(
            [(i + 0.5) * (row.examples.shape[2] + 2) - 1 for i in range(len(row.example_amounts))]
        )
        ax.set_xticklabels([f"{a:g}" for a in row.example_amounts], fontsize=6)
        ax.set_yticks([])
        ax.set_title(f"{row.name}: {row.unit}", fontsize=7.5)
        panels = [
            (f"{n}: distance / mean norm", row.distance[i], None) for i, n in enumerate(layer_names)
        ]
        panels.append(("probability of the true class", row.probability, (0, 1.02)))
        for c, (label, values, ylim) in enumerate(panels, start=1):
            ax = fig.add_subplot(grid[r, c])
            for b, curve in enumerate(np.asarray(values)):
                ax.plot(
                    row.amounts,
                    curve,
                    color=_COLOURS[b % len(_COLOURS)],
                    lw=1.1,
                    marker=".",
                    ms=3,
                    label=image_names[b] if b < len(image_names) else None,
                )
            if ylim:
                ax.set_ylim(*ylim)
            else:
                ax.set_ylim(bottom=0)
            ax.set_title(label, fontsize=7.5)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3, lw=0.5)
            if r == len(rows) - 1:
                ax.set_xlabel(row.unit, fontsize=6.5)
    handles, labels = fig.axes[-1].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(labels), 10), fontsize=7, frameon=False
    )
    return fig


def correspondence_figure(
    region_names: Sequence[str],
    layer_names: Sequence[str],
    mean: np.ndarray,
    spread: np.ndarray,
    examples: np.ndarray,
    title: str,
    note: str = "",
):
    """Zeiler & Fergus Table 1 / Figure 8: ``examples`` ``(R, n, H, W, 3)`` the masked
    images of each of the R regions (the last usually the random control); ``mean``
    and ``spread`` ``(R, L)`` the score per region and layer, drawn as grouped bars
    with error bars and printed as a table. Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    mean, spread = np.asarray(mean, dtype=float), np.asarray(spread, dtype=float)
    examples = np.asarray(examples)
    nreg, nlay = mean.shape
    head = 0.35 + 0.16 * (title.count("\n") + 1)
    body = max(0.85 * nreg, 3.0)
    table = 0.22 * (nreg + 1)
    height = head + body + table + 0.75
    fig = Figure(figsize=(11.0, height), dpi=100)
    fig.suptitle(title, fontsize=8)
    outer = fig.add_gridspec(
        2,
        1,
        height_ratios=[body, table],
        left=0.1,
        right=0.98,
        top=1 - head / height,
        bottom=0.3 / height,
        hspace=0.45 / body,
    )
    top = outer[0].subgridspec(nreg, 2, width_ratios=[1.0, 1.25], wspace=0.18, hspace=0.12)
    for r in range(nreg):
        ax = fig.add_subplot(top[r, 0])
        ax.imshow(_strip(examples[r]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(region_names[r], fontsize=7, rotation=0, ha="right", va="center")
    ax = fig.add_subplot(top[:, 1])
    width_bar = 0.8 / nreg
    x = np.arange(nlay)
    for r in range(nreg):
        ax.bar(
            x + (r - (nreg - 1) / 2) * width_bar,
            mean[r],
            width_bar * 0.95,
            yerr=spread[r],
            capsize=2,
            color=_COLOURS[r % len(_COLOURS)],
            label=region_names[r],
            error_kw={"lw": 0.8},
        )
    ax.set_xticks(x)
    ax.set_xticklabels(layer_names, fontsize=7.5)
    ax.set_ylabel("Delta: mean fraction of features whose\nchange has a different sign", fontsize=7)
    ax.tick_params(labelsize=6.5)
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    ax.legend(fontsize=6.5, frameon=False)
    cells = [[f"{m:.3f} ± {s:.3f}" for m, s in zip(mean[r], spread[r])] for r in range(nreg)]
    tab = fig.add_subplot(outer[1])
    tab.set_axis_off()
    grid = tab.table(
        cellText=cells,
        rowLabels=list(region_names),
        colLabels=list(layer_names),
        cellLoc="center",
        bbox=[0, 0, 1, 1],
    )
    grid.auto_set_font_size(False)
    grid.set_fontsize(7)
    if note:
        fig.text(0.5, 0.06 / height, note, ha="center", va="bottom", fontsize=6.5)
    return fig


def filter_tiles(weight, colour: Optional[bool] = None) -> np.ndarray:
    """Conv filters ``(F, C, kh, kw)`` -> display tiles ``(F, kh, kw, 3)`` in ``[0, 1]``.

    Each tile is scaled symmetrically around zero by its own largest ``|value|``
    (``0.5 + 0.5 * w / max|w|``, zero is mid-grey; an all-zero filter stays grey).
    Filters with 3 input channels (a first layer on RGB) are drawn as RGB; others
    as grey tiles of the **mean over input channels** (the filter's response to a
    pattern equal in every input channel), unless ``colour`` forces the choice.
    """
    w = np.array(
        weight.detach().cpu().numpy() if hasattr(weight, "detach") else weight, dtype=np.float64
    )
    if w.ndim != 4:
        raise ValueError(f"filters must be (F, C, kh, kw); got shape {w.shape}")
    rgb = (w.shape[1] == 3) if colour is None else colour
    t = w[:, :3] if rgb else np.repeat(w.mean(axis=1, keepdims=True), 3, axis=1)
    scale = np.abs(t).reshape(len(t), -1).max(axis=1)
    safe = np.where(scale > 0, scale, 1.0).reshape(-1, 1, 1, 1)
    return np.clip(0.5 + 0.5 * t / safe, 0.0, 1.0).transpose(0, 2, 3, 1)


def filters_figure(
    tiles: np.ndarray,
    features: Sequence[int],
    rms: Sequence[float],
    title: str,
    dead: Optional[Sequence[bool]] = None,
    columns: int = 8,
    max_rms: Optional[float] = None,
):
    """Filter tiles ``(F, kh, kw, 3)`` in the given order (e.g. by RMS, largest
    first), each captioned with its feature number and RMS; features in ``dead``
    (a flag per tile) are captioned in red as never firing. Below the grid, the
    RMS values as bars in the same order (``max_rms``: a clipping radius line).
    Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    n = len(tiles)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    tile = 1.0
    head = 0.45 + 0.16 * title.count("\n")
    bars = 1.6
    height = (tile + 0.42) * rows + head + bars + 0.35
    width = max(tile * columns + 0.4, 6.0)
    fig = Figure(figsize=(width, height), dpi=100)
    fig.suptitle(title, fontsize=8)
    top = 1 - head / height
    grid_bottom = (bars + 0.45) / height
    grid = fig.add_gridspec(
        rows,
        columns,
        left=0.2 / width,
        right=1 - 0.2 / width,
        top=top,
        bottom=grid_bottom,
        wspace=0.12,
        hspace=0.55,
    )
    dead = list(dead) if dead is not None else [False] * n
    for i in range(n):
        ax = fig.add_subplot(grid[divmod(i, columns)])
        ax.imshow(tiles[i], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        cap = f"f{int(features[i])}  {float(rms[i]):.3f}" + ("\nnever fires" if dead[i] else "")
        ax.set_xlabel(cap, fontsize=6, labelpad=1.5, color="#c00000" if dead[i] else "black")
    ax = fig.add_axes([0.7 / width, 0.3 / height, 1 - 0.9 / width, (bars - 0.15) / height])
    ax.bar(
        np.arange(n),
        np.asarray(rms, dtype=float),
        color=["#c00000" if d else "#4a6fa5" for d in dead],
    )
    if max_rms is not None:
        ax.axhline(max_rms, color="k", lw=0.8, ls="--")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("RMS", fontsize=7)
    ax.set_xlabel("filters in the order above", fontsize=6.5, labelpad=1)
    ax.tick_params(labelsize=6)
    return fig
