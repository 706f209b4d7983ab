"""Drawing a report: one grid per layer (the paper's Figure 2) and one PNG per feature."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..store.report_h5 import LayerReport
from .display import grid_image, image_to_display, to_display

__all__ = [
    "layer_cell",
    "feature_panel",
    "feature_png",
    "layer_figure",
    "write_png",
    "PANEL_TITLE_HEIGHT",
    "MAX_GRID_PX",
]

_TILE = 64  # per-feature PNG tiles are enlarged (nearest neighbour) to about this many pixels


def _tiles(lr: LayerReport, f: int) -> Tuple[np.ndarray, np.ndarray]:
    """Display tiles of feature ``f``: its projections and patches, both cut to the
    receptive-field window (as stored) and lined up.

    Both ``(k, rf_h, rf_w, 3)`` in ``[0, 1]``. Window pixels outside the image are
    drawn mid-grey in the patch (the projection is zero there anyway).
    """
    rh, rw = lr.rf_size
    k = lr.k
    inside = np.zeros((k, rh, rw), dtype=bool)
    for j in range(k):
        y0, x0, y1, x1 = (int(v) for v in lr.patch_box[f, j])
        oy, ox = y0 - int(lr.patch_origin[f, j, 0]), x0 - int(lr.patch_origin[f, j, 1])
        inside[j, oy : oy + y1 - y0, ox : ox + x1 - x0] = True
    proj = (
        to_display(torch.from_numpy(np.asarray(lr.projection[f], dtype=np.float32)))
        if k
        else np.zeros((0, rh, rw, 3))
    )
    patch = image_to_display(torch.from_numpy(lr.patch[f])) if k else np.zeros((0, rh, rw, 3))
    patch = np.where(inside[..., None], patch, 0.5)
    return proj, patch


def layer_cell(lr: LayerReport, f: int) -> np.ndarray:
    """One feature's cell of the layer grid (as in the paper's Figure 2): its ``k``
    projections in a square block, beside its ``k`` patches in the same order.
    RGB ``(h, w, 3)`` in ``[0, 1]``."""
    proj, patch = _tiles(lr, f)
    cols = max(1, int(np.ceil(np.sqrt(lr.k))))
    left = grid_image(list(proj), cols, pad=1, background=1.0)
    right = grid_image(list(patch), cols, pad=1, background=1.0)
    gap = np.ones((left.shape[0], 2, 3))
    return np.concatenate([left, gap, right], axis=1)


def feature_panel(lr: LayerReport, f: int, scale: Optional[int] = None) -> np.ndarray:
    """One feature's PNG: top row its ``k`` projections (best first), bottom row the
    matching patches, each tile upscaled ``scale`` times (default: to about 64
    pixels, e.g. 4x for a 16x16 field). ``uint8 (h, w, 3)``, 2-pixel white gaps."""
    if scale is None:
        scale = max(1, _TILE // max(lr.rf_size))
    proj, patch = _tiles(lr, f)
    tiles = [np.kron(t, np.ones((scale, scale, 1))) for t in list(proj) + list(patch)]
    grid = grid_image(tiles, max(1, lr.k), pad=2, background=1.0)
    return (grid * 255).round().clip(0, 255).astype(np.uint8)


PANEL_TITLE_HEIGHT = 18  # pixels above the tiles of a feature PNG (its title)
_CAPTION_LINE = 12  # pixels per caption line under each column


def _caption_lines(lr: LayerReport, f: int, j: int, class_names: Sequence[str]) -> List[str]:
    label = int(lr.label[f, j])
    cls = (
        class_names[label]
        if 0 <= label < len(class_names)
        else ("unlabelled" if label < 0 else f"class {label}")
    )
    return [f"act {float(lr.activation[f, j]):.3g}", f"#{int(lr.image_index[f, j])}", cls]


def feature_png(
    lr: LayerReport, f: int, class_names: Sequence[str] = (), scale: Optional[int] = None
) -> np.ndarray:
    """One feature's PNG as written by reports: a title (layer, feature, k), then
    :func:`feature_panel` (projections above patches) at ``(PANEL_TITLE_HEIGHT, 0)``,
    then under each column its activation, image index and class ("unlabelled"
    where the image has no label). ``uint8 (h, w, 3)``."""
    from PIL import Image, ImageDraw

    grid = feature_panel(lr, f, scale)
    scale = scale or max(1, _TILE // max(lr.rf_size))
    col_w = lr.rf_size[1] * scale + 2
    lines = 3 if lr.k else 0
    title = (
        f"{lr.title}, feature {int(lr.feature_ids[f])}: top {lr.k} (projection above, "
        "image patch below)"
    )
    width = max(grid.shape[1], 6 * len(title) + 8)
    canvas = Image.new(
        "RGB", (width, PANEL_TITLE_HEIGHT + grid.shape[0] + lines * _CAPTION_LINE + 2), "white"
    )
    canvas.paste(Image.fromarray(grid), (0, PANEL_TITLE_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 3), title, fill=(0, 0, 0))
    y0 = PANEL_TITLE_HEIGHT + grid.shape[0]
    for j in range(lr.k):
        for n, text in enumerate(_caption_lines(lr, f, j, class_names)):
            # Cut captions to the column so neighbours never overlap.
            text = text if 6 * len(text) <= col_w else text[: max(1, col_w // 6 - 1)] + "."
            draw.text((2 + j * col_w, y0 + n * _CAPTION_LINE), text, fill=(0, 0, 0))
    return np.asarray(canvas)


#: Widest layer grid, in pixels: a deep layer of a large network (512 features of
#: VGG-16's conv5_3, receptive fields of 212x212) would otherwise ask for a picture of
#: billions of pixels; its cells are then shrunk (block means) to fit.
MAX_GRID_PX = 10000


def _shrunk(cell: np.ndarray, factor: int) -> np.ndarray:
    """``cell`` (h, w, 3) in [0, 1] averaged over ``factor`` x ``factor`` blocks, uint8."""
    h, w = cell.shape[0] // factor * factor, cell.shape[1] // factor * factor
    small = cell[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    return (small * 255).round().astype(np.uint8)


def layer_figure(lr: LayerReport, title: str):
    from matplotlib.figure import Figure

    F_ = lr.features
    cols = max(1, int(np.ceil(np.sqrt(F_))))
    rows = -(-F_ // cols)
    first = layer_cell(lr, 0)
    ch, cw = first.shape[:2]
    # At least 2.5 screen pixels per image pixel and 180 per cell, so small
    # receptive fields (6x6 in layer 1) stay legible; at most MAX_GRID_PX in all.
    inch = max(2.5 * cw, 180) / 100
    if cols * inch * 100 <= MAX_GRID_PX:
        cells = [first] + [layer_cell(lr, f) for f in range(1, F_)]
    else:  # uint8 cells, shrunk to about the pixels they will get
        inch = MAX_GRID_PX / 100 / cols
        factor = max(1, int(cw // (inch * 100)))
        small = _shrunk(first, factor)
        # One block for all cells: many small arrays kept between the large temporaries
        # of each cell would fragment the heap (gigabytes for VGG-16's conv5_3).
        cells = np.empty((F_,) + small.shape, np.uint8)
        cells[0] = small
        for f in range(1, F_):
            cells[f] = _shrunk(layer_cell(lr, f), factor)
    fig = Figure(figsize=(cols * inch, rows * inch * (ch / cw) * 1.15 + 0.75), dpi=100)
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for f, cell in enumerate(cells):
        ax = axes.ravel()[f]
        ax.imshow(cell, interpolation="nearest")
        ax.set_title(f"feature {int(lr.feature_ids[f])}", fontsize=6, pad=2)
    fig.subplots_adjust(
        left=0.005,
        right=0.995,
        bottom=0.005,
        top=1 - 0.75 / fig.get_figheight(),
        wspace=0.04,
        hspace=0.18,
    )
    return fig


def write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")
