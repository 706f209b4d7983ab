"""Notebook display: a report, a layer, a feature and a projection as inline HTML.

What Jupyter shows for ``_repr_html_`` (:mod:`deconvviz.explore`) and for a
:class:`~deconvviz.engine.deconv.deconvnet.Projection`: the same tiles as the web report
(projections in the package's display normalisation, patches with pixels outside the
image mid-grey, see :func:`deconvviz.render.web.site.feature_tiles`), embedded as
base64 PNGs so the notebook file carries them, and the same statistics drawing
(:func:`~deconvviz.render.feature_stats.statistics_html`). Nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import io
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .display import to_display_uint8
from .web.pages import NORMALISATION, display_size

__all__ = [
    "img_tag",
    "tile_grid_html",
    "feature_html",
    "layer_html",
    "report_html",
    "projection_html",
    "TILE_PX",
]

TILE_PX = 64  # display target of a tile (pixels), enlarged without smoothing
_CELL = (
    "display:inline-flex;flex-direction:column;align-items:center;margin:2px 6px 6px 0;"
    "font-size:11px;vertical-align:top"
)


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def img_tag(rgb: np.ndarray, target: int = TILE_PX, alt: str = "") -> str:
    """``uint8 (h, w, 3)`` as an ``<img>`` with the PNG inline (``data:`` URI), enlarged
    by an integer factor towards ``target`` pixels without smoothing."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    h, w, px = display_size(rgb.shape[:2], target)
    style = "image-rendering:pixelated;" if px else ""
    return (
        f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" '
        f'width="{w}" height="{h}" alt="{_esc(alt)}" style="{style}background:#808080">'
    )


def tile_grid_html(
    cells: Sequence[Tuple[List[np.ndarray], Sequence[str]]], target: int = TILE_PX
) -> str:
    """A wrapping grid: each cell is ``(pictures uint8 (h, w, 3) side by side, caption
    lines)``."""
    out = []
    for pictures, lines in cells:
        imgs = "".join(img_tag(p, target) for p in pictures)
        caption = "".join(f"<div>{_esc(t)}</div>" for t in lines)
        out.append(
            f'<div class="dv-cell" style="{_CELL}"><div style="display:flex;gap:2px">'
            f"{imgs}</div>{caption}</div>"
        )
    return f'<div class="dv-grid" style="display:flex;flex-wrap:wrap">{"".join(out)}</div>'


def feature_html(
    title: str,
    projections: np.ndarray,
    patches: np.ndarray,
    captions: Sequence[str],
    statistics: Optional[str],
) -> str:
    """One feature: its title, its top-k tiles (projection beside patch, ``uint8 (k, h,
    w, 3)`` each, one caption per rank) and its statistics fragment (or a note where
    the report has none)."""
    cells = [([projections[j], patches[j]], [captions[j]]) for j in range(len(captions))]
    return (
        f'<div class="dv-feature"><h4 style="margin:4px 0">{_esc(title)}</h4>'
        f"{tile_grid_html(cells, 2 * TILE_PX)}"
        f"{statistics if statistics else ''}"
        f'<p style="font-size:11px;color:#5f6870">{_esc(NORMALISATION)}</p></div>'
    )


def layer_html(
    title: str, lines: Sequence[str], cells: Sequence[Tuple[List[np.ndarray], Sequence[str]]]
) -> str:
    """One layer: a title, lines of text, and a grid of feature cells."""
    text = "".join(f'<p style="margin:2px 0">{_esc(t)}</p>' for t in lines)
    return (
        f'<div class="dv-layer"><h4 style="margin:4px 0">{_esc(title)}</h4>{text}'
        f"{tile_grid_html(cells)}</div>"
    )


def report_html(title: str, provenance: Sequence[Tuple[str, str]], layers: Sequence[str]) -> str:
    """A report: provenance rows and one HTML fragment per layer."""
    rows = "".join(
        f'<tr><th style="text-align:left;padding-right:12px">{_esc(k)}</th>'
        f'<td style="text-align:left">{_esc(v)}</td></tr>'
        for k, v in provenance
    )
    return (
        f'<div class="dv-report"><h3 style="margin:4px 0">{_esc(title)}</h3>'
        f'<table style="font-size:12px">{rows}</table>{"".join(layers)}</div>'
    )


def projection_html(projection, limit: int = 64) -> str:
    """A :class:`~deconvviz.engine.deconv.deconvnet.Projection` as its tile grid: each seed's
    projection (whole image, display-normalised), captioned with image, feature and
    activation; at most ``limit`` seeds."""
    proj = projection.projections.detach().cpu().double().numpy()
    s = proj.shape[0]
    rgb, _ = to_display_uint8(proj[:limit])
    cells = []
    for j in range(min(s, limit)):
        cells.append(
            (
                [rgb[j]],
                [
                    f"image {int(projection.image_index[j])}",
                    f"feature {int(projection.feature[j])}",
                    f"act {float(projection.activation[j]):.4g}",
                ],
            )
        )
    more = f" (first {limit} shown)" if s > limit else ""
    title = (
        f"deconvnet projections of layer {projection.layer}: {s} seeds{more}, rule "
        f"{projection.rule}, unpooling {projection.unpool}"
    )
    return (
        f'<div class="dv-projection"><h4 style="margin:4px 0">{_esc(title)}</h4>'
        f'{tile_grid_html(cells)}<p style="font-size:11px;color:#5f6870">'
        f"{_esc(NORMALISATION)}</p></div>"
    )
