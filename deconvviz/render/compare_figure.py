"""Drawing a comparison of networks (``deconvviz compare``): a PNG and a web page.

Each row is one matched feature: for two networks the top images of both side by
side, for a list of checkpoints the strongest projection of the feature each one
matched to (the paper's Figure 4, matched rather than by index). The page is one
self-contained HTML file (its pictures embedded, no script, nothing fetched) that
links to each network's own web report where one was written.
"""

from __future__ import annotations

import html
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .notebook import img_tag

__all__ = ["Row", "comparison_figure", "comparison_page"]

#: A row: its caption and, per network, the tiles shown (uint8 (h, w, 3); None: no
#: matched feature there).
Row = Tuple[str, List[List[Optional[np.ndarray]]]]
_GAP = 6


def _strip(tiles: Sequence[Optional[np.ndarray]], height: int, width: int) -> np.ndarray:
    out = np.full((height, max(1, len(tiles)) * (width + 1), 3), 255, np.uint8)
    for j, t in enumerate(tiles):
        x0 = j * (width + 1)
        if t is None:
            out[:height, x0 : x0 + width] = 200
        else:
            out[: t.shape[0], x0 : x0 + t.shape[1]] = t
    return out


def _row_image(groups: List[List[Optional[np.ndarray]]]) -> np.ndarray:
    shown = [t for g in groups for t in g if t is not None]
    h = max((t.shape[0] for t in shown), default=8)
    w = max((t.shape[1] for t in shown), default=8)
    strips = [_strip(g, h, w) for g in groups]
    gap = np.full((h, _GAP, 3), 255, np.uint8)
    parts = []
    for j, s in enumerate(strips):
        parts += ([gap] if j else []) + [s]
    return np.concatenate(parts, axis=1)


def comparison_figure(rows: Sequence[Row], columns: Sequence[str], title: str):
    """One line of tiles per row, the networks' groups separated by a gap, each row
    captioned on its left. Returns a matplotlib ``Figure`` (not attached to pyplot)."""
    from matplotlib.figure import Figure

    images = [_row_image(groups) for _, groups in rows] or [np.full((8, 8, 3), 255, np.uint8)]
    width_px = max(im.shape[1] for im in images)
    fig = Figure(figsize=(min(24.0, 2.6 + width_px / 20.0), 0.9 + 0.75 * len(images)), dpi=100)
    fig.suptitle(title + "\ncolumns: " + " | ".join(columns), fontsize=8)
    axes = fig.subplots(len(images), 1, squeeze=False)[:, 0]
    for ax, im, (caption, _) in zip(axes, images, rows or [("no matched features", [])]):
        ax.imshow(im, interpolation="nearest", aspect="equal")
        ax.set_xlim(-0.5, width_px - 0.5)
        ax.set_axis_off()
        ax.text(-0.01, 0.5, caption, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(
        left=0.14, right=0.99, bottom=0.01, top=1 - 0.8 / (0.9 + 0.75 * len(images)), hspace=0.15
    )
    return fig


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def comparison_page(
    title: str,
    provenance: Sequence[Tuple[str, str]],
    columns: Sequence[str],
    rows: Sequence[Tuple[Sequence[str], Row]],
    notes: Sequence[str],
) -> str:
    """A whole HTML page: provenance, then a table with one line per row: its cells'
    text (already-escaped HTML fragments such as links), then each network's tiles."""
    prov = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in provenance)
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for cells, (_, groups) in rows:
        tiles = "".join(
            '<td class="tiles">'
            + "".join(
                img_tag(t, 48) if t is not None else '<span class="none">no match</span>' for t in g
            )
            + "</td>"
            for g in groups
        )
        body.append('<tr class="pair">' + "".join(f"<td>{c}</td>" for c in cells) + tiles + "</tr>")
    text = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; color: #1d2125; margin: 12px 20px; }}
table {{ border-collapse: collapse; }}
table.prov th {{ text-align: left; color: #5f6870; padding-right: 14px; }}
table.pairs td, table.pairs th {{ border-bottom: 1px solid #d9dde1; padding: 4px 8px;
  vertical-align: middle; text-align: left; }}
td.tiles img {{ display: inline-block; margin-right: 2px; }}
span.none {{ color: #9aa3ab; }}
p.note {{ color: #5f6870; max-width: 72em; }}
</style></head>
<body><h1>{_esc(title)}</h1>
<table class="prov">{prov}</table>{text}
<table class="pairs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
</body></html>
"""
