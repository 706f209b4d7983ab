"""Writing the web report: a static site that opens from disk (file://, no server).

Layout under ``OUT/site/`` (see the README):

``index.html``                             provenance and a strip per layer
``assets/``                                ``style.css``, ``layer.js``, ``feature.js``
``images/image{i}.png``                    every kept image, whole (``i``: source index)
``{layer}.html``                           a layer's features, paged (``layer2.html#f9``)
``{layer}/feature{f:03d}.html``            one feature: its top-k, citable
``{layer}/tiles/feature{f:03d}_{r}_projection.png``, ``..._patch.png``
                                           rank ``r`` (from 1) of feature ``f``

``f`` is the feature's channel number (the layer's ``feature`` ids): a report of some
features of a layer (``--feature 3 --feature 7-9``) names and links them as the whole
layer's report would.

Every PNG is written once at the size stored in the report and enlarged by the
browser without smoothing; pages share them. :class:`SiteWriter` fills a folder
layer by layer (``write_report`` fills it from the finished report file);
:func:`write_site` builds the site from a report file, reading one layer at a
time, into a temporary folder that replaces ``OUT/site`` only when complete.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from ...errors import DeconvvizError
from ...store.atomic import atomic_folder, check_writable_dir
from ...store.report_h5 import ImageTable, LayerReport, Report, class_names
from ...store.report_read import open_report
from ..display import to_display_uint8
from ..feature_stats import class_name, statistics_html
from .feature_page import Tile, feature_page
from .index_page import index_page
from .layer_page import layer_page
from .pages import LayerSummary, display_size, href

__all__ = [
    "SITE_DIR",
    "PAGE_SIZE",
    "site_path",
    "SiteWriter",
    "write_site",
    "timestamp",
    "feature_tiles",
]

SITE_DIR = "site"
PAGE_SIZE = 96  # feature tiles per page of a layer page
STRIP = 32  # thumbnails per layer on the index
_PX = {"strip": 40, "layer": 64, "feature": 128, "whole": 192}  # display targets (pixels)
_RESERVED = {"index", "assets", "images"}
_V1_MISSING = "whole image not stored in this version-1 report"


def site_path(out_dir: Union[str, Path]) -> Path:
    """Where the web report of ``out_dir`` goes: ``out_dir/site``."""
    return Path(out_dir) / SITE_DIR


def _png(array: np.ndarray, path: Path) -> None:
    """``uint8 (h, w, 3)`` -> PNG. Light compression: these are small and many."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=1)


def feature_tiles(lr: LayerReport, f: int):
    """Feature ``f``'s tiles as the site draws them, ``uint8``: projections ``(k, rf_h,
    rf_w, 3)`` in the package's display normalisation, patches ``(k, rf_h, rf_w, 3)``
    (window pixels outside the image mid-grey, as the report PNGs draw them), and each
    projection's display scale ``(k,)``."""
    proj, scale = to_display_uint8(lr.projection[f])
    patch = np.ascontiguousarray(lr.patch[f].transpose(0, 2, 3, 1))
    inside = np.zeros(patch.shape[:3], dtype=bool)
    for j in range(lr.k):
        y0, x0, y1, x1 = (int(v) for v in lr.patch_box[f, j])
        oy, ox = y0 - int(lr.patch_origin[f, j, 0]), x0 - int(lr.patch_origin[f, j, 1])
        inside[j, oy : oy + y1 - y0, ox : ox + x1 - x0] = True
    patch[~inside] = 128
    return proj, patch, scale


def _workers() -> int:
    """Threads that encode PNGs (PIL and numpy release the GIL while they work)."""
    return max(1, min(8, os.cpu_count() or 1))


def _parallel(fn, items: List, workers: int) -> List:
    """``[fn(x) for x in items]`` on ``workers`` threads; on any error (or Ctrl-C)
    the queued calls are cancelled before the error goes on."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        out = list(pool.map(fn, items))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out


class SiteWriter:
    """Fill the folder ``root`` with a report's web site, one layer at a time.

    ``attrs``: the report's root attributes; ``images``: its kept images (None
    for a version-1 report: the feature pages then say that whole images are not
    stored); ``date_line``: what the index says under "date". Call
    :meth:`add_layer` for every layer in order, then :meth:`finish`. ``root``
    should be a temporary folder (see :func:`~deconvviz.store.atomic.atomic_folder`).
    """

    def __init__(
        self,
        root: Union[str, Path],
        attrs: dict,
        images: Optional[ImageTable],
        date_line: str,
        page_size: int = PAGE_SIZE,
    ):
        self.root = Path(root)
        self.attrs = attrs
        self.date_line = date_line
        self.page_size = max(1, int(page_size))
        self.classes = class_names(attrs)
        self.image_size = tuple(int(v) for v in attrs.get("image_size", [32, 32]))
        self.summaries: List[LayerSummary] = []
        self._slugs = set()
        self.root.mkdir(parents=True, exist_ok=True)
        assets = self.root / "assets"
        assets.mkdir(exist_ok=True)
        static = resources.files(__package__).joinpath("static")
        for name in ("style.css", "layer.js", "feature.js", "index.js"):
            (assets / name).write_bytes(static.joinpath(name).read_bytes())
        self.missing = _V1_MISSING if images is None else "whole image not stored in this report"
        # Keep only what the pages need of the images (not their pixels).
        self.image_index = np.zeros(0, np.int64) if images is None else np.asarray(images.index)
        self.image_path = [] if images is None else list(images.path)
        self.workers = _workers()
        if images is not None:
            (self.root / "images").mkdir(exist_ok=True)
            folder, pixels = self.root / "images", images.pixels
            _parallel(
                lambda j: _png(
                    pixels[j].transpose(1, 2, 0), folder / f"image{int(self.image_index[j])}.png"
                ),
                list(range(len(self.image_index))),
                self.workers,
            )

    def _slug(self, name: str) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "layer"
        if slug in _RESERVED:
            slug = f"node_{slug}"
        base, n = slug, 1
        while slug in self._slugs:
            n += 1
            slug = f"{base}_{n}"
        self._slugs.add(slug)
        return slug

    def _row(self, image_index: int) -> int:
        j = int(np.searchsorted(self.image_index, image_index))
        return j if j < len(self.image_index) and self.image_index[j] == image_index else -1

    def _class(self, label: int) -> str:
        if label < 0:
            return ""
        return self.classes[label] if label < len(self.classes) else f"class {label}"

    def add_layer(self, lr: LayerReport) -> LayerSummary:
        """Write layer ``lr``'s tiles, feature pages and layer page. Row ``r`` of the
        layer is channel ``lr.feature_ids[r]``: pages and tiles are named by channel."""
        F_, k = lr.features, lr.k
        ids = [int(c) for c in lr.feature_ids]
        act0 = lr.activation[:, 0].astype(np.float64) if k else np.zeros(F_)
        # Never fires: its largest activation is exactly 0 (a ReLU output that stayed off
        # on every image). Negative maxima (nodes before a ReLU) are real and are shown.
        dead = act0 == 0
        slug = self._slug(lr.name)
        folder = self.root / slug
        (folder / "tiles").mkdir(parents=True)
        order = sorted((f for f in range(F_) if not dead[f]), key=lambda f: (-act0[f], f))
        s = LayerSummary(
            name=lr.name,
            slug=slug,
            title=lr.title,
            path=lr.path,
            features=F_,
            k=k,
            rf_size=tuple(lr.rf_size),
            output_size=tuple(lr.output_size),
            dead=int(dead.sum()),
            strongest=[(ids[f], float(act0[f])) for f in order[:STRIP]],
            max_act=float(act0.max()) if F_ else 0.0,
            feature_ids=ids,
            op=lr.op,
        )
        tile = display_size(lr.rf_size, _PX["feature"])
        whole = display_size(self.image_size, _PX["whole"])

        def draw(f: int) -> np.ndarray:
            proj, patch, scale = feature_tiles(lr, f)
            for j in range(k):
                stem = folder / "tiles" / f"feature{ids[f]:03d}_{j + 1}"
                _png(proj[j], stem.with_name(stem.name + "_projection.png"))
                _png(patch[j], stem.with_name(stem.name + "_patch.png"))
            return scale

        alive = [f for f in range(F_) if not dead[f]]
        scales = dict(zip(alive, _parallel(draw, alive, self.workers)))
        for f in range(F_):
            tiles = []
            if not dead[f]:
                for j in range(k):
                    i = int(lr.image_index[f, j])
                    row = self._row(i)
                    tiles.append(
                        Tile(
                            rank=j + 1,
                            activation=float(lr.activation[f, j]),
                            image_index=i,
                            class_name=self._class(int(lr.label[f, j])),
                            file=self.image_path[row] if row >= 0 else "",
                            position=tuple(int(v) for v in lr.position[f, j]),
                            box=tuple(int(v) for v in lr.patch_box[f, j]),
                            scale=float(scales[f][j]),
                            whole=href("..", "images", f"image{i}.png") if row >= 0 else None,
                        )
                    )
            # What the feature detects (issue 20; None in reports without statistics).
            stats = statistics_html(lr.stats, f, self.classes) if lr.stats is not None else None
            (folder / f"feature{ids[f]:03d}.html").write_text(
                feature_page(
                    s,
                    self.attrs,
                    f,
                    tiles,
                    bool(dead[f]),
                    self.image_size,
                    tile,
                    whole,
                    self.missing,
                    stats,
                ),
                encoding="utf-8",
            )
        top_class = [self._class(int(lr.label[f, 0])) if k else "" for f in range(F_)]
        labels = (
            None
            if lr.stats is None
            else [
                (class_name(self.classes, int(c)) if c >= 0 else "", float(a), float(r))
                for c, a, r in zip(lr.stats.label, lr.stats.label_auroc, lr.stats.firing_rate)
            ]
        )
        s.labels = [(ids[f], name, a) for f, (name, a, _) in enumerate(labels or []) if name]
        (self.root / f"{slug}.html").write_text(
            layer_page(
                s,
                self.attrs,
                act0,
                dead,
                top_class,
                display_size(lr.rf_size, _PX["layer"]),
                self.page_size,
                labels,
            ),
            encoding="utf-8",
        )
        self.summaries.append(s)
        return s

    def finish(self) -> Path:
        """Write ``index.html`` (after every layer); returns its path."""
        path = self.root / "index.html"
        path.write_text(
            index_page(self.attrs, self.summaries, self.date_line, _PX["strip"]), encoding="utf-8"
        )
        return path


def timestamp() -> str:
    """Now, as the index's date line shows it (local time, minutes)."""
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def write_site(
    report: Union[Report, str, Path], out_dir: Union[str, Path], *, page_size: int = PAGE_SIZE
) -> Path:
    """Write the web report of ``report`` (a :class:`Report` or its HDF5 file) to
    ``out_dir/site/``, all or nothing; returns the path of its ``index.html``.

    From a file, each layer's projections and patches are read one feature at a time
    (memory holds one feature's data and the kept images once). The site is built in a
    temporary folder beside the target and swapped in only when complete: a failure or
    Ctrl-C leaves an earlier site untouched. Raises
    :class:`~deconvviz.errors.DeconvvizError` (one line) for a damaged, foreign or newer
    report file, or an output folder that is a file or not writable.
    """
    if isinstance(report, Report):
        return _write_site(report, out_dir, f"site written {timestamp()}", "the report", page_size)
    path = Path(report)
    with open_report(path) as opened:  # layers read one feature at a time
        mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
        date_line = f"report file dated {mtime:%Y-%m-%d %H:%M %Z}; site written {timestamp()}"
        return _write_site(opened, out_dir, date_line, f"report {path}", page_size)


def _write_site(report: Report, out_dir, date_line: str, where: str, page_size: int) -> Path:
    if not report.layers:
        raise DeconvvizError(f"{where} holds no layers")
    out_dir = check_writable_dir(out_dir)
    with atomic_folder(site_path(out_dir)) as tmp:
        writer = SiteWriter(tmp, report.attrs, report.images, date_line, page_size)
        for lr in report.layers.values():
            writer.add_layer(lr)
        writer.finish()
    return site_path(out_dir) / "index.html"
