"""What a feature detects, drawn as HTML: the per-class AUROC bars, the histogram of its
per-image maxima and its firing numbers. One drawing for the web report's feature page
and the notebook display (:mod:`.notebook`), with inline styles so it needs no style
sheet, no script and nothing from the network."""

from __future__ import annotations

import html
from typing import List, Sequence

import numpy as np

from ..store.statistics import NO_CLASS_TEXT, FeatureStatistics, label_text

__all__ = ["statistics_html", "label_caption", "class_name"]


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def class_name(classes: Sequence[str], c: int) -> str:
    """The name of class ``c`` (``class 7`` where the report has no name for it)."""
    return classes[c] if 0 <= c < len(classes) else f"class {c}"


def label_caption(stats: FeatureStatistics, f: int, classes: Sequence[str]) -> str:
    """The short line under a tile: ``dog 0.93`` (class and AUROC) or ``no class``."""
    c = int(stats.label[f])
    if c < 0:
        return NO_CLASS_TEXT
    return f"{class_name(classes, c)} {stats.label_auroc[f]:.2f}"


def _p(p: float) -> str:
    if np.isnan(p):
        return "–"
    return "&lt; 1e-300" if p < 1e-300 else f"{p:.2g}"


def _histogram_svg(stats: FeatureStatistics, f: int, width: int = 360, height: int = 90) -> str:
    counts = stats.histogram[f].astype(np.float64)
    edges = stats.histogram_edges[f]
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    bw = width / max(1, counts.size)
    bars = "".join(
        f'<rect x="{i * bw:.2f}" y="{height - 16 - (height - 20) * c / top:.2f}" '
        f'width="{max(bw - 1, 1):.2f}" height="{(height - 20) * c / top:.2f}" fill="#3b528b">'
        f"<title>{edges[i]:.4g} .. {edges[i + 1]:.4g}: {int(c)} images</title></rect>"
        for i, c in enumerate(counts)
    )
    return (
        f'<svg class="hist" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
        f'aria-label="histogram of the maximum activation per image">{bars}'
        f'<line x1="0" y1="{height - 16}" x2="{width}" y2="{height - 16}" stroke="#5f6870"/>'
        f'<text x="0" y="{height - 3}" font-size="10" fill="#5f6870">{edges[0]:.3g}</text>'
        f'<text x="{width}" y="{height - 3}" font-size="10" fill="#5f6870" '
        f'text-anchor="end">{edges[-1]:.3g}</text></svg>'
    )


def statistics_html(stats: FeatureStatistics, f: int, classes: Sequence[str]) -> str:
    """Feature ``f``'s statistics as an HTML fragment: its label, firing rate, mean and
    quantiles, the histogram of its maximum per image, and one AUROC bar per class
    (the 0.5 line marks chance; p is the one-sided Mann-Whitney p, Holm-corrected over
    the classes; "top k" is the share of its top images in the class)."""
    levels = ", ".join(
        f"{100 * q:g}%: {v:.3g}" for q, v in zip(stats.quantile_levels, stats.quantiles[f])
    )
    rows: List[str] = []
    for c in range(stats.classes):
        a = float(stats.auroc[f, c])
        w = 0.0 if np.isnan(a) else 100.0 * a
        mine = c == int(stats.label[f])
        colour = "#0b5cad" if mine else "#9aa3ab"
        name = _esc(class_name(classes, c))
        rows.append(
            f'<tr class="auroc-row{" label" if mine else ""}" data-class="{name}">'
            f'<th style="text-align:left;font-weight:{700 if mine else 400};padding:1px 8px 1px 0;'
            f'white-space:nowrap">{name}</th>'
            f'<td style="width:220px;padding:1px 0"><div style="position:relative;height:12px;'
            f'background:#f4f6f8;border:1px solid #d9dde1"><div class="bar" style="width:{w:.1f}%;'
            f'height:100%;background:{colour}"></div><div style="position:absolute;left:50%;'
            f'top:-2px;bottom:-2px;border-left:1px dashed #1d2125"></div></div></td>'
            f'<td class="auroc" style="padding:1px 6px;text-align:right">'
            f"{'–' if np.isnan(a) else f'{a:.3f}'}</td>"
            f'<td style="padding:1px 6px;text-align:right">{_p(float(stats.p_adjusted[f, c]))}</td>'
            f'<td style="padding:1px 6px;text-align:right">{100 * stats.topk_share[f, c]:.0f}%</td>'
            "</tr>"
        )
    return (
        '<div class="feature-stats">'
        f'<p class="label"><b>detects:</b> {_esc(label_text(stats, f, list(classes)))}</p>'
        f'<p class="firing">fires (maximum &gt; 0) on {100 * stats.firing_rate[f]:.1f}% of the '
        f"{int(stats.maxima.shape[1]):,} images; mean maximum {stats.mean[f]:.4g}; quantiles "
        f"{_esc(levels)}</p>"
        f'<figure style="margin:6px 0">{_histogram_svg(stats, f)}<figcaption style="font-size:'
        '12px;color:#5f6870">maximum activation per image over the whole scan</figcaption>'
        "</figure>"
        '<table class="auroc-bars" style="border-collapse:collapse;font-size:12px">'
        '<thead><tr><th style="text-align:left">class</th><th style="text-align:left">AUROC '
        "(dashed: 0.5, chance)</th><th>AUROC</th><th>p (Holm)</th><th>top k</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
