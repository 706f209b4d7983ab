"""Drawing a report: its PNGs (one grid per layer, one PNG per feature, from
:mod:`deconvviz.render.report_png`) and its web report (:mod:`deconvviz.render.web`),
put in place atomically together with the HDF5 file. :func:`render_report` redraws the
PNGs from a report file alone; :func:`finish_report` draws a just-written report and
renames it into place with its drawings.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..progress import Progress
from ..render.report_png import feature_png, layer_figure, write_png
from ..render.web import SiteWriter, site_path, timestamp
from ..store.atomic import atomic_folder, atomic_paths, check_writable_dir
from ..store.report_h5 import REPORT_FILE, LayerReport, Report, class_names
from ..store.report_read import open_report
from ..store.report_write import write_report_h5

__all__ = ["report_paths", "save_report", "render_report", "finish_report"]


def finish_report(
    out_dir: Path,
    partial: Path,
    *,
    png: bool,
    html: bool,
    progress: bool,
    timings: dict,
) -> List[Path]:
    """Draw the PNGs and the site from the finished ``partial`` file (one feature at a
    time), then rename it to ``report.h5`` together with the PNGs and swap in the site."""
    with open_report(partial) as rep:
        lrs = list(rep.layers.values())
        paths = _paths(out_dir, [(lr.name, lr.feature_ids) for lr in lrs])
        keys = [key for key in paths if key == "h5" or png]
        if png:
            for lr in lrs:
                check_writable_dir(out_dir / lr.name)
        targets = [paths[key] for key in keys]
        # The site's folder is swapped in just after the files are renamed into place.
        with atomic_folder(site_path(out_dir)) if html else contextlib.nullcontext() as site_tmp:
            with atomic_paths(targets, prepared={paths["h5"]: partial}) as tmps:
                tmp = dict(zip(keys, tmps))
                if png:
                    with Progress(
                        sum(lr.features + 1 for lr in lrs), "PNGs", unit="png", enabled=progress
                    ) as bar:
                        for lr in lrs:
                            _draw_layer(lr, rep.attrs, tmp, bar)
                if html:
                    assert site_tmp is not None  # atomic_folder's, with html
                    t_html = time.perf_counter()
                    site = SiteWriter(
                        site_tmp, rep.attrs, rep.images, f"report written {timestamp()}"
                    )
                    with Progress(len(lrs), "web report", unit="layer", enabled=progress) as bar:
                        for lr in lrs:
                            site.add_layer(lr)
                            bar.update(1)
                        site.finish()
                    timings["html"] = time.perf_counter() - t_html
    if html:
        targets.append(site_path(out_dir) / "index.html")
    return targets


def _paths(out_dir: Path, layers: Sequence[Tuple[str, Iterable[int]]]) -> Dict[str, Path]:
    """``layers``: (group name, channel numbers kept) of each layer."""
    paths = {"h5": out_dir / REPORT_FILE}
    for name, features in layers:
        paths[name] = out_dir / f"{name}.png"
        for f in features:
            paths[f"{name}/feature{int(f)}"] = out_dir / name / f"feature{int(f):03d}.png"
    return paths


def report_paths(report: Report, out_dir: Union[str, Path]) -> Dict[str, Path]:
    """Where a report's files go: ``report.h5``, ``layer{L}.png`` and
    ``layer{L}/feature{f:03d}.png`` under ``out_dir`` (keys: ``"h5"``, ``"layer{L}"``,
    ``"layer{L}/feature{f}"``, ``f`` the channel number)."""
    return _paths(Path(out_dir), [(lr.name, lr.feature_ids) for lr in report.layers.values()])


def _draw_layer(
    lr: LayerReport, attrs: dict, tmp: Dict[str, Path], bar: Optional[Progress] = None
) -> None:
    src = attrs.get("data_source", "")
    title = (
        f"{lr.title}: top {lr.k} of {attrs.get('num_images', '?')} images per "
        f"feature ({src})\nleft: deconvnet projections, right: image patches"
    )
    layer_figure(lr, title).savefig(tmp[lr.name], format="png")
    if bar is not None:
        bar.update(1)
    classes = class_names(attrs)
    for f, channel in enumerate(lr.feature_ids):
        write_png(feature_png(lr, f, classes), tmp[f"{lr.name}/feature{int(channel)}"])
        if bar is not None:
            bar.update(1)


def _draw_all(report: Report, targets: Dict[str, Path], tmp: Dict[str, Path]) -> None:
    for L in report.layers:
        _draw_layer(report.layers[L], report.attrs, tmp)


def save_report(
    report: Report, out_dir: Union[str, Path], *, h5: bool = True, png: bool = True
) -> List[Path]:
    """Write the report's HDF5 file and/or PNGs into ``out_dir``, all or nothing.

    Every file is written to a temporary file beside its target; only when all
    are complete are they renamed into place, so a failure or Ctrl-C leaves an
    earlier report untouched and no half-written file. Returns the paths written.
    """
    out_dir = check_writable_dir(out_dir)
    paths = report_paths(report, out_dir)
    keys = [k for k in paths if (k == "h5" and h5) or (k != "h5" and png)]
    if png:
        for L in report.layers:
            check_writable_dir(out_dir / report.layers[L].name)
    targets = [paths[k] for k in keys]
    with atomic_paths(targets) as tmps:
        tmp = dict(zip(keys, tmps))
        if h5:
            write_report_h5(report, tmp["h5"])
        if png:
            _draw_all(report, paths, tmp)
    return targets


def render_report(report: Union[Report, str, Path], out_dir: Union[str, Path]) -> List[Path]:
    """Draw a report's PNGs (one grid per layer, one PNG per feature) into ``out_dir``.

    ``report`` is a :class:`Report` or the path of its HDF5 file: no model and no
    data are needed. Written atomically (see :func:`save_report`).
    """
    if isinstance(report, Report):
        return save_report(report, out_dir, h5=False, png=True)
    with open_report(report) as opened:  # layers read one feature at a time
        return save_report(opened, out_dir, h5=False, png=True)
