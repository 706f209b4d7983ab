"""A feature's page of the web report: its top-k projections, image patches and whole
images with the receptive field drawn on them, one card (:class:`Tile`) each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional, Sequence, Tuple

from .pages import NORMALISATION, LayerSummary, act_text, count_text, esc, fill_page, href, img_tag

__all__ = ["Tile", "feature_page"]


def _track(value: float, top: float) -> str:
    """A bar on the activation colour scale (0 .. the layer's strongest activation)."""
    frac = max(0.0, float(value)) / top if top > 0 else 0.0
    size = 100.0 / frac if frac > 0 else 100.0
    return (
        f'<span class="track" title="activation {act_text(value)} of at most {act_text(top)}">'
        f'<span class="fill" style="display:block;width:{100 * frac:.2f}%;'
        f'background-size:{size:.2f}% 100%"></span></span>'
    )


@dataclass
class Tile:
    """One of a feature's top-k: what its card on the feature page shows."""

    rank: int  # 1-based
    activation: float
    image_index: int
    class_name: str  # "" where unlabelled
    file: str  # the image's file, "" where the source has none
    position: Tuple[int, int]  # row, column in the layer's output map
    box: Tuple[int, int, int, int]  # y0, x0, y1, x1 in image pixels, end exclusive
    scale: float  # the projection tile's display scale
    whole: Optional[str]  # link to the whole image's PNG, None where not stored


def feature_page(
    s: LayerSummary,
    attrs: dict,
    row: int,
    tiles: Sequence[Tile],
    dead: bool,
    image_size: Tuple[int, int],
    tile_size: Tuple[int, int, bool],
    whole_size: Tuple[int, int, bool],
    missing_images: str,
    statistics: Optional[str] = None,
) -> str:
    """The page of the layer's feature in row ``row`` (named by its channel number,
    :meth:`LayerSummary.channel`): its top-k projections, patches and whole images with
    the receptive field drawn on them (``tiles``); a feature that never fires says so.
    ``statistics``: what it detects over the whole scan (an HTML fragment of
    :func:`deconvviz.render.feature_stats.statistics_html`), shown above the cards.
    Previous / next step through the layer's rows (the channels the report keeps)."""
    n = count_text(attrs)
    f = s.channel(row)
    title = f"{s.title}, feature {f}"
    cards = []
    H, W = image_size
    for t in tiles:
        stem = f"feature{f:03d}_{t.rank}"
        y0, x0, y1, x1 = t.box
        if t.whole is not None:
            style = (
                f"left:{100 * x0 / W:.3f}%;top:{100 * y0 / H:.3f}%;"
                f"width:{100 * (x1 - x0) / W:.3f}%;height:{100 * (y1 - y0) / H:.3f}%"
            )
            whole = (
                f'<div class="whole" style="width:{whole_size[1]}px;height:{whole_size[0]}px">'
                + img_tag(t.whole, f"image {t.image_index}", whole_size)
                + f'<span class="box" style="{style}"></span></div>'
            )
        else:
            whole = (
                f'<div class="missing" style="width:{whole_size[1]}px;height:'
                f'{whole_size[0]}px">{esc(missing_images)}</div>'
            )
        caption = (
            "whole image, the red box is the receptive field"
            if t.whole is not None
            else "whole image"
        )
        name = PurePosixPath(t.file.replace("\\", "/")).name if t.file else ""
        facts = [
            ("image", f"#{t.image_index}"),
            ("class", esc(t.class_name) if t.class_name else "<em>unlabelled</em>"),
        ]
        if t.file:
            facts.append(("file", f'<span title="{esc(t.file)}">{esc(name)}</span>'))
        facts += [
            (
                "position",
                f"row {t.position[0]}, column {t.position[1]} of the "
                f"{s.output_size[0]}&times;{s.output_size[1]} map",
            ),
            (
                "receptive field",
                f"rows {y0}&ndash;{y1 - 1}, columns {x0}&ndash;{x1 - 1}"
                + (" (red box)" if t.whole is not None else ""),
            ),
            ("projection scale", f"&plusmn;{t.scale:.3g}"),
        ]
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        proj = img_tag(
            href("tiles", stem + "_projection.png"),
            f"{title}, rank {t.rank}: projection",
            tile_size,
        )
        patch = img_tag(
            href("tiles", stem + "_patch.png"), f"{title}, rank {t.rank}: image patch", tile_size
        )
        cards.append(
            f'<div class="card" id="rank{t.rank}"><h3>#{t.rank} &middot; activation '
            f'{act_text(t.activation)} {_track(t.activation, s.max_act)}</h3><div class="row">'
            f"<figure>{proj}<figcaption>deconvnet projection</figcaption></figure>"
            f"<figure>{patch}<figcaption>image patch (receptive field)</figcaption></figure>"
            f"<figure>{whole}<figcaption>{caption}</figcaption></figure></div>"
            f'<dl class="facts">{dl}</dl></div>'
        )
    if dead:
        summary = (
            f'<p class="note warn">Feature {f} never fires: its largest activation over '
            f"all {esc(n)} images is 0, so no image shows what it responds to "
            "and there is nothing to project.</p>"
        )
        heading = f"{title}: never fires"
    else:
        summary = (
            f'<p class="lead">The {len(tiles)} images of {esc(n)} on which feature {f} '
            "fires most, strongest first: each deconvnet projection back to pixels, the "
            "image patch under its receptive field, and the whole image.</p>"
        )
        heading = f"{title}: its top {len(tiles)} images"
    up = href("..", s.slug + ".html") + f"#f{f}"
    before = s.channel(row - 1) if row > 0 else None
    after = s.channel(row + 1) if row + 1 < s.features else None
    prev_link = (
        f'<a id="prev" href="{href(f"feature{before:03d}.html")}">&lsaquo; feature {before}</a>'
        if before is not None
        else '<a class="off">&lsaquo; first feature</a>'
    )
    next_link = (
        f'<a id="next" href="{href(f"feature{after:03d}.html")}">feature {after} &rsaquo;</a>'
        if after is not None
        else '<a class="off">last feature &rsaquo;</a>'
    )
    if statistics:
        summary += f'<section class="stats"><h2>What it detects</h2>{statistics}</section>'
    card_w = 2 * tile_size[1] + whole_size[1] + 60
    return fill_page(
        "feature.html",
        title=esc(f"{title} - deconvviz report"),
        root="../",
        layer_title=esc(s.title),
        layer_href=up,
        feature=str(f),
        prev_link=prev_link,
        next_link=next_link,
        heading=esc(heading),
        summary=summary,
        normalisation=esc(NORMALISATION),
        max_act=esc(act_text(s.max_act)),
        card_w=str(max(card_w, 300)),
        cards="\n".join(cards),
    )
