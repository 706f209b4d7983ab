"""The web report's ``index.html``: the report's provenance, a search for the features
that detect a class, and a strip of each layer's strongest features."""

from __future__ import annotations

from typing import Sequence

from .pages import (
    NORMALISATION,
    LayerSummary,
    act_text,
    count_text,
    display_size,
    esc,
    fill_page,
    href,
    img_tag,
    json_script,
)

__all__ = ["index_page"]


def _op(s: LayerSummary) -> str:
    return f" ({esc(s.op)})" if s.op else ""


def index_page(
    attrs: dict, layers: Sequence[LayerSummary], date_line: str, strip_px: int = 40
) -> str:
    """The site's ``index.html``: provenance and a strip of thumbnails (about
    ``strip_px`` pixels) per layer."""
    from ... import __version__

    n = count_text(attrs)
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
                f'title="feature {f}: strongest activation {act_text(a)}">'
                + img_tag(
                    href(*base[:2], base[2] + "_projection.png"),
                    f"{s.title}, feature {f}: strongest projection",
                    strip_size,
                )
                + img_tag(
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
    return fill_page(
        "index.html",
        title=esc(f"deconvviz report: {names}"),
        heading=esc(f"Top-{attrs.get('top_k', '?')} images per feature: {names}"),
        k=esc(attrs.get("top_k", "?")),
        provenance=prov,
        normalisation=esc(NORMALISATION),
        layers="\n".join(sections),
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
