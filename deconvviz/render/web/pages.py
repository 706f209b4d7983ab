"""The web report's HTML: the index, one page per layer, one page per feature.

Every value that comes from the report file (paths, class names, the command
line, layer names) goes through :func:`esc` into HTML, or through
:func:`json_script` into the JSON a layer page carries, so a file name such as
``</script><script>alert(1)</script>.png`` is shown as text, never run.
Pages are filled from the templates in ``templates/`` with :class:`string.Template`.
"""

from __future__ import annotations

import html
import json
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import PurePosixPath
from typing import List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np

from ..display import DISPLAY_PERCENTILE

__all__ = [
    "esc",
    "json_script",
    "href",
    "NORMALISATION",
    "LayerSummary",
    "Tile",
    "index_page",
    "layer_page",
    "feature_page",
    "template",
]

NORMALISATION = (
    "Projections: zero is mid-grey (brighter positive, darker negative) and each tile is "
    f"stretched by its own {DISPLAY_PERCENTILE:g}th percentile of |value|, its scale, so "
    "brightness compares pixels within a tile, not across tiles. Small pictures are enlarged "
    "without smoothing."
)


def esc(value) -> str:
    """Text for HTML content and quoted attributes (``& < > " '`` escaped)."""
    return html.escape(str(value), quote=True)


def json_script(value) -> str:
    """``value`` as JSON that is safe inside ``<script type="application/json">``: no
    ``<``, ``>`` or ``&`` survive (so no ``</script>`` or ``<!--``), nor the two line
    separators that older JavaScript parsers reject."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, rep in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, rep)
    return text


def href(*parts: str) -> str:
    """A relative link from path parts (each percent-encoded), escaped for an attribute."""
    return esc("/".join(quote(p, safe="") if p not in ("..", ".") else p for p in parts))


@lru_cache(maxsize=None)
def template(name: str) -> string.Template:
    """A page template shipped in ``deconvviz/render/web/templates``."""
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    return string.Template(text)


def _count(attrs: dict) -> str:
    """The number of images scanned, as the pages print it (``50,000``)."""
    n = attrs.get("num_images", "?")
    return f"{n:,}" if isinstance(n, int) else str(n)


def _act(v: float) -> str:
    return f"{float(v):.4g}"


def _num(v: float) -> float:
    """A statistic for the page's JSON: 4 decimals, -1 where absent (JSON has no NaN)."""
    return -1.0 if v != v else round(float(v), 4)


def _track(value: float, top: float) -> str:
    """A bar on the activation colour scale (0 .. the layer's strongest activation)."""
    frac = max(0.0, float(value)) / top if top > 0 else 0.0
    size = 100.0 / frac if frac > 0 else 100.0
    return (
        f'<span class="track" title="activation {_act(value)} of at most {_act(top)}">'
        f'<span class="fill" style="display:block;width:{100 * frac:.2f}%;'
        f'background-size:{size:.2f}% 100%"></span></span>'
    )


def display_size(n: Tuple[int, int], target: int) -> Tuple[int, int, bool]:
    """How big to show an ``(h, w)`` picture near ``target`` pixels: an integer
    enlargement (drawn without smoothing) when it is smaller, else shrunk to fit.
    Returns ``(height, width, pixelated)``."""
    h, w = int(n[0]), int(n[1])
    big = max(h, w, 1)
    if big <= target:
        s = max(1, target // big)
        return h * s, w * s, s > 1
    return max(1, round(h * target / big)), max(1, round(w * target / big)), False


def _img(src: str, alt: str, size: Tuple[int, int, bool], cls: str = "") -> str:
    h, w, px = size
    classes = " ".join(c for c in (cls, "px" if px else "") if c)
    cls_attr = f' class="{classes}"' if classes else ""
    return (
        f'<img src="{src}" alt="{esc(alt)}" width="{w}" height="{h}" loading="lazy" '
        f'decoding="async"{cls_attr}>'
    )


@dataclass
class LayerSummary:
    """What the index says about one layer (filled as each layer is written)."""

    name: str  # group name: ``layer2`` or a graph node's name
    slug: str  # its file and folder name in the site
    title: str  # ``layer 2`` / ``node layer3.1.relu_1``
    path: str  # module path in the network
    features: int
    k: int
    rf_size: Tuple[int, int]
    output_size: Tuple[int, int]
    dead: int
    strongest: List[Tuple[int, float]]  # (feature, activation) of its strongest features
    max_act: float
    op: str = ""  # what the node calls (``SiLU``, ``SqueezeExcitation``); "" if unknown
    # (feature, class it detects, AUROC) of every labelled feature (issue 20)
    labels: List[Tuple[int, str, float]] = field(default_factory=list)
    # the channel number of each row (empty: 0 .. features - 1, the whole layer)
    feature_ids: List[int] = field(default_factory=list)

    def channel(self, row: int) -> int:
        """The channel number of row ``row``: what pages and files call the feature."""
        return int(self.feature_ids[row]) if self.feature_ids else int(row)

    def numbering(self) -> str:
        """Which feature numbers the layer's pages hold, in words."""
        ids = [self.channel(r) for r in range(self.features)]
        if ids == list(range(self.features)):
            return f"features are numbered 0\u2013{self.features - 1}"
        return f"this report keeps features {_ranges(ids)} of this layer"


def _ranges(ids: Sequence[int]) -> str:
    """``[3, 7, 8, 9]`` as ``3, 7\u20139``."""
    parts, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[i - 1] + 1:
            a, b = ids[start], ids[i - 1]
            parts.append(str(a) if a == b else f"{a}\u2013{b}")
            start = i
    return ", ".join(parts)


def _op(s: LayerSummary) -> str:
    return f" ({esc(s.op)})" if s.op else ""


def _page(name: str, *, title: str, root: str = "", **values) -> str:
    """Page template ``name`` filled with ``values``, after the head every page shares
    (``head.html``: ``title``, the generator stamp, the style sheet at ``root``)."""
    from ... import __version__

    head = template("head.html").substitute(site_version=esc(__version__), title=title, root=root)
    return template(name).substitute(head=head, **values)


def index_page(
    attrs: dict, layers: Sequence[LayerSummary], date_line: str, strip_px: int = 40
) -> str:
    """The site's ``index.html``: provenance and a strip of thumbnails (about
    ``strip_px`` pixels) per layer."""
    from ... import __version__

    n = _count(attrs)
    sha = str(attrs.get("checkpoint_sha256", ""))
    split = str(attrs.get("split", "") or "")
    rows = [
        (
            "model",
            f"<code>{esc(attrs.get('checkpoint_path', '') or '(unknown)')}</code>"
            + (
                f' <span title="sha256 {esc(sha)}">(sha256 {esc(sha[:12])}&hellip;)</span>'
                if sha
                else ""
            ),
        ),
        (
            "data",
            f"{esc(attrs.get('data_source', ''))}"
            + (f" (split {esc(split)})" if split else "")
            + f", {esc(n)} images scanned",
        ),
        ("top k", f"{esc(attrs.get('top_k', '?'))} images kept per feature"),
        (
            "projection",
            f"ReLU rule <code>{esc(attrs.get('rule', 'deconvnet'))}</code>, unpooling "
            f"by <code>{esc(attrs.get('unpool', 'switches'))}</code>",
        ),
        ("command", f"<code>{esc(attrs.get('command_line', ''))}</code>"),
        ("date", esc(date_line)),
        (
            "versions",
            f"report written by deconvviz {esc(attrs.get('package_version', '?'))} "
            f"(format version {esc(attrs.get('format_version', '?'))}); this site by "
            f"deconvviz {esc(__version__)}",
        ),
    ]
    prov = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    sections = []
    for s in layers:
        strip_size = display_size(s.rf_size, strip_px)
        thumbs = []
        for f, a in s.strongest:
            base = (s.slug, "tiles", f"feature{f:03d}_1")
            thumbs.append(
                f'<a class="thumb" href="{href(s.slug, f"feature{f:03d}.html")}" '
                f'title="feature {f}: strongest activation {_act(a)}">'
                + _img(
                    href(*base[:2], base[2] + "_projection.png"),
                    f"{s.title}, feature {f}: strongest projection",
                    strip_size,
                )
                + _img(
                    href(*base[:2], base[2] + "_patch.png"),
                    f"{s.title}, feature {f}: its image patch",
                    strip_size,
                )
                + f"{f}</a>"
            )
        shown = (
            f"its {len(s.strongest)} strongest features (projection above, patch below)"
            if len(s.strongest) < s.features - s.dead
            else "every feature that fires, strongest first (projection above, patch below)"
        )
        dead = f"; {s.dead} never fire{'s' if s.dead == 1 else ''}" if s.dead else ""
        sections.append(
            f'<section class="layer"><h2><a href="{href(s.slug + ".html")}">{esc(s.title)}</a>'
            f'</h2><div class="meta"><code>{esc(s.path)}</code>{_op(s)} &middot; '
            f"{s.features} features"
            f"{dead} &middot; receptive field {s.rf_size[0]}&times;{s.rf_size[1]} px &middot; "
            f"{s.output_size[0]}&times;{s.output_size[1]} positions &middot; {esc(shown)}</div>"
            f'<div class="strip">{"".join(thumbs) or "<em>no feature of this layer fires</em>"}'
            f"</div></section>"
        )
    names = ", ".join(s.title for s in layers)
    sections.insert(0, _class_search(layers))
    return _page(
        "index.html",
        title=esc(f"deconvviz report: {names}"),
        heading=esc(f"Top-{attrs.get('top_k', '?')} images per feature: {names}"),
        k=esc(attrs.get("top_k", "?")),
        provenance=prov,
        normalisation=esc(NORMALISATION),
        layers="\n".join(sections),
    )


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
        "images": _count(attrs),
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
    return _page(
        "layer.html",
        title=esc(f"{s.title}: {s.features} features - deconvviz report"),
        layer_title=esc(s.title),
        heading=esc(
            f"{s.title} ({s.path}{', ' + s.op if s.op else ''}): "
            f"{s.features} features, top {s.k} of {n} images each"
        ),
        k=esc(s.k),
        normalisation=esc(NORMALISATION),
        max_act=esc(_act(s.max_act)),
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


def _class_search(layers: Sequence[LayerSummary]) -> str:
    """The index's search box: which features, of every layer, detect a class (``index.js``
    filters the JSON it carries); empty for a report without feature statistics."""
    found = [
        [s.slug, s.title, f, name, round(float(a), 4)] for s in layers for f, name, a in s.labels
    ]
    if not found:
        return ""
    return (
        '<section class="search"><h2>Which features detect &hellip;</h2>'
        '<label>class <input type="search" id="class-search" placeholder="e.g. dog"></label> '
        '<span id="hit-count"></span><ol id="hits"></ol>'
        f'<script type="application/json" id="label-data">{json_script(found)}</script>'
        '<script src="assets/index.js"></script></section>'
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
    n = _count(attrs)
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
                + _img(t.whole, f"image {t.image_index}", whole_size)
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
        proj = _img(
            href("tiles", stem + "_projection.png"),
            f"{title}, rank {t.rank}: projection",
            tile_size,
        )
        patch = _img(
            href("tiles", stem + "_patch.png"), f"{title}, rank {t.rank}: image patch", tile_size
        )
        cards.append(
            f'<div class="card" id="rank{t.rank}"><h3>#{t.rank} &middot; activation '
            f'{_act(t.activation)} {_track(t.activation, s.max_act)}</h3><div class="row">'
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
    return _page(
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
        max_act=esc(_act(s.max_act)),
        card_w=str(max(card_w, 300)),
        cards="\n".join(cards),
    )
