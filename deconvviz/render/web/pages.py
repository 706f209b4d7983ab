"""The web report's HTML, what every page shares: escaping (:func:`esc`,
:func:`json_script`, :func:`href`), the templates in ``templates/`` filled with
:class:`string.Template` (:func:`fill_page`), picture sizes and the :class:`LayerSummary`
of each layer. The pages themselves: :mod:`.index_page`, :mod:`.layer_page`,
:mod:`.feature_page`.

Every value that comes from the report file (paths, class names, the command
line, layer names) goes through :func:`esc` into HTML, or through
:func:`json_script` into the JSON a layer page carries, so a file name such as
``</script><script>alert(1)</script>.png`` is shown as text, never run.
"""

from __future__ import annotations

import html
import json
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import List, Sequence, Tuple
from urllib.parse import quote

from ..display import DISPLAY_PERCENTILE

__all__ = [
    "esc",
    "json_script",
    "href",
    "NORMALISATION",
    "LayerSummary",
    "template",
    "fill_page",
    "display_size",
    "img_tag",
    "count_text",
    "act_text",
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


def count_text(attrs: dict) -> str:
    """The number of images scanned, as the pages print it (``50,000``)."""
    n = attrs.get("num_images", "?")
    return f"{n:,}" if isinstance(n, int) else str(n)


def act_text(v: float) -> str:
    """An activation as the pages print it (4 significant digits)."""
    return f"{float(v):.4g}"


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


def img_tag(src: str, alt: str, size: Tuple[int, int, bool], cls: str = "") -> str:
    """An ``<img>`` of ``size`` (``(height, width, pixelated)`` of :func:`display_size`),
    loaded lazily; ``alt`` escaped, ``src`` an :func:`href` already."""
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


def fill_page(name: str, *, title: str, root: str = "", **values) -> str:
    """Page template ``name`` filled with ``values``, after the head every page shares
    (``head.html``: ``title``, the generator stamp, the style sheet at ``root``)."""
    from ... import __version__

    head = template("head.html").substitute(site_version=esc(__version__), title=title, root=root)
    return template(name).substitute(head=head, **values)
