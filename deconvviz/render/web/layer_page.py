"""A layer's page of the web report: its features as tiles, paged, sorted and filtered in
the browser (``static/layer.js``) from the JSON the page carries."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np

from .pages import (
    NORMALISATION,
    LayerSummary,
    act_text,
    count_text,
    esc,
    fill_page,
    href,
    json_script,
)

__all__ = ["layer_page"]


def _num(v: float) -> float:
    """A statistic for the page's JSON: 4 decimals, -1 where absent (JSON has no NaN)."""
    return -1.0 if v != v else round(float(v), 4)


def layer_page(
    s: LayerSummary,
    attrs: dict,
    activation0: np.ndarray,
    dead: np.ndarray,
    top_class: Sequence[str],
    tile_size: Tuple[int, int, bool],
    page_size: int,
    labels: Optional[Sequence[Tuple[str, float, float]]] = None,
) -> str:
    """A layer's page: its features as tiles, paged, sorted and filtered by ``layer.js``
    from the JSON it carries. ``labels``: per feature ``(detected class or "", its AUROC,
    firing rate)`` from the report's statistics (None: a report without them)."""
    stats = labels is not None
    labels = labels if stats else [("", float("nan"), float("nan"))] * s.features
    data = {
        "dir": quote(s.slug, safe=""),
        "tiles": "tiles",
        "pageSize": int(page_size),
        "tileW": tile_size[1],
        "tileH": tile_size[0],
        "pixelated": bool(tile_size[2]),
        "maxAct": float(s.max_act),
        "images": count_text(attrs),
        "features": [
            [
                s.channel(f),
                float(f"{float(activation0[f]):.5g}"),
                int(bool(dead[f])),
                top_class[f],
                labels[f][0],
                _num(labels[f][1]),
                _num(labels[f][2]),
            ]
            for f in range(s.features)
        ],
        "statistics": stats,
        "numbering": s.numbering(),
    }
    n = attrs.get("num_images", "?")
    one = s.dead == 1
    dead_note = (
        f'<p class="note">{s.dead} of the {s.features} features never '
        f"fire{'s' if one else ''}: {'its' if one else 'their'} largest activation over "
        f"all {esc(n)} images is 0, so no image shows what "
        f"{'it responds' if one else 'they respond'} to. Hatched tiles show "
        f"{'it' if one else 'them'}.</p>"
        if s.dead
        else ""
    )
    dead_label = (
        f"hide the {s.dead} feature{'' if one else 's'} that never fire{'s' if one else ''}"
        if s.dead
        else "hide features that never fire (every feature here fires)"
    )
    lo, hi = (s.channel(0), s.channel(s.features - 1)) if s.features else (0, 0)
    first = href(s.slug, f"feature{lo:03d}.html")
    return fill_page(
        "layer.html",
        title=esc(f"{s.title}: {s.features} features - deconvviz report"),
        layer_title=esc(s.title),
        heading=esc(
            f"{s.title} ({s.path}{', ' + s.op if s.op else ''}): "
            f"{s.features} features, top {s.k} of {n} images each"
        ),
        k=esc(s.k),
        normalisation=esc(NORMALISATION),
        max_act=esc(act_text(s.max_act)),
        dead_label=dead_label,
        dead_disabled="" if s.dead else " disabled",
        dead_note=dead_note,
        first=str(lo),
        last=str(hi),
        tile_w=str(2 * tile_size[1] + 14),
        data=json_script(data),
        stats_disabled="" if stats else " disabled",
        stats_note=""
        if stats
        else (
            '<p class="note">This report has no feature statistics (written before '
            "format version 3): run 'deconvviz report' again to label its features."
            "</p>"
        ),
        first_link=f'<a href="{first}">feature {lo}</a>',
    )
