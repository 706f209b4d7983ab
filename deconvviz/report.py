"""Max-activation reports over whole data sets (Zeiler & Fergus, Figure 2): orchestration.

One pass over a data source keeps, for every feature of the chosen layers, the
``k`` images on which the feature fires most (:mod:`deconvviz.engine.topk`,
merged across ``torchrun`` ranks by :mod:`deconvviz.engine.distributed`). The
kept seeds are then projected back to pixels with the deconvnet in batched
passes (:mod:`deconvviz.engine.seeds`) and cut out beside the image patch under
their receptive field (:mod:`deconvviz.engine.receptive`). The result is stored
as one HDF5 file (:mod:`deconvviz.store.report`) and drawn as PNGs
(:mod:`deconvviz.render.report_png`); :func:`render_report` redraws the PNGs
from the HDF5 file alone.

When the source has fewer than ``k`` images, the report keeps ``min(k, N)``
columns (every image, ranked): files never hold padding entries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import __version__
from .data.sources import ImageSource
from .engine.deconvnet import RULES
from .engine.distributed import Ranks, gather_topk
from .engine.receptive import extract_patches
from .engine.seeds import project_seeds
from .engine.topk import finalize_topk, layer_infos, normalization_of, scan_topk
from .errors import DeconvvizError
from .progress import Progress
from .render.report_png import feature_panel, layer_figure, write_png
from .store.atomic import atomic_paths, check_writable_dir
from .store.report import (REPORT_FILE, REPORT_FORMAT, REPORT_VERSION, LayerReport, Report,
                           read_report_h5, write_report_h5)

__all__ = ["build_report", "report_paths", "save_report", "render_report"]


def build_report(model: nn.Module, source: ImageSource, layers: Optional[Sequence[int]] = None,
                 k: int = 9, *, batch_size: int = 500, device: Union[str, torch.device] = "cpu",
                 rule: str = "deconvnet", progress: bool = True, limit: Optional[int] = None,
                 ranks: Optional[Ranks] = None, command_line: str = "",
                 timings: Optional[dict] = None
                 ) -> Optional[Report]:
    """Scan ``source`` once and build the paper's Figure 2 for every feature of ``layers``.

    ``model``: a network loaded with :func:`~deconvviz.checkpoint.load_model` (its
    ``meta`` gives normalisation and checkpoint hash); ``layers``: layer numbers
    (default: every conv layer); ``k``: images kept per feature; ``limit``: scan
    only the first ``limit`` images. With ``ranks`` (a
    :class:`~deconvviz.engine.distributed.Ranks` of a ``torchrun`` job), each rank
    scans its share in one agreed stage, the lists are merged exactly, and rank
    0 projects and returns the report while other ranks return ``None``. The returned :class:`Report` is what
    :func:`write_report_h5` stores and :func:`render_report` draws. ``timings``, if
    given, receives the seconds spent in ``"scan"`` (including the merge across
    ranks) and ``"project"`` (projections and patches), for benchmarks.
    """
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    mean, std = normalization_of(model)
    n = len(source) if limit is None else min(len(source), int(limit))
    if n < 1:
        raise DeconvvizError(f"{source.description} has no images to scan")
    infos = layer_infos(model, layers, source.image_size)
    ranks = ranks if ranks is not None else Ranks(0, 1, str(device))
    rank, world = ranks.rank, ranks.world
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    # Each rank's share of images, for its progress bar (batches are dealt round-robin).
    mine = sum(min(n, s + batch_size) - s for b, s in enumerate(range(0, n, batch_size))
               if b % world == rank)
    with ranks.stage("the scan"), Progress(
            mine, "scan" if world == 1 else f"scan (rank {rank}/{world})",
            enabled=progress and rank == 0) as bar:
        tops = scan_topk(model, source, [i.index for i in infos], k, batch_size=batch_size,
                         device=device, progress=bar, shard=(rank, world), stop=n, mean=mean,
                         std=std)
    if world > 1:
        tops = gather_topk(tops, device)
        if rank != 0:
            return None
    tops = {L: finalize_topk(t, n) for L, t in tops.items()}
    timings["scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Read every kept image once, whatever the number of layers that keep it.
    wanted = sorted({int(i) for t in tops.values() for i in t.image_index.reshape(-1).tolist()})
    pixels = source.read_indices(wanted)
    images = {i: pixels[j] for j, i in enumerate(wanted)}
    meta = getattr(model, "meta", None) or {}
    report = Report(attrs={
        "format": REPORT_FORMAT, "format_version": REPORT_VERSION,
        "package_version": __version__,
        "checkpoint_sha256": str(meta.get("sha256", "")),
        "checkpoint_path": str(meta.get("path", "")),
        "data_source": source.description, "data_kind": source.kind,
        "data_fingerprint": source.fingerprint,
        "split": source.split or "", "num_images": n, "command_line": command_line,
        "top_k": int(k), "layers": [i.index for i in infos], "rule": rule, "unpool": "switches",
        "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "image_size": list(source.image_size),
        "class_names": json.dumps(list(source.class_names)),
        "world_size": world,
    })
    projections, _ = project_seeds(model, images, tops, rule=rule, device=device, mean=mean,
                                   std=std)
    for info in infos:
        top = tops[info.index]
        flat_idx = top.image_index.reshape(-1)
        seed_pix = torch.stack([images[int(i)] for i in flat_idx]) if flat_idx.numel() else \
            torch.zeros((0, 3) + tuple(source.image_size), dtype=torch.uint8)
        patch, box, origin = extract_patches(info, seed_pix, top.position.reshape(-1, 2))
        F_, kk = top.image_index.shape
        labels = source.labels[flat_idx] if flat_idx.numel() else flat_idx
        report.layers[info.index] = LayerReport(
            layer=info.index, path=info.path, output_size=info.output_size,
            rf_size=info.rf_size, rf_jump=info.rf_jump, rf_start=info.rf_start,
            activation=top.activation.numpy().astype(np.float32),
            image_index=top.image_index.numpy(),
            label=labels.reshape(F_, kk).numpy().astype(np.int64),
            position=top.position.numpy(),
            projection=projections[info.index].numpy(),
            patch=patch.reshape(F_, kk, *patch.shape[1:]).numpy(),
            patch_box=box.reshape(F_, kk, 4).numpy(),
            patch_origin=origin.reshape(F_, kk, 2).numpy())
    timings["project"] = time.perf_counter() - t0
    return report


def report_paths(report: Report, out_dir: Union[str, Path]) -> Dict[str, Path]:
    """Where a report's files go: ``report.h5``, ``layer{L}.png`` and
    ``layer{L}/feature{f:03d}.png`` under ``out_dir`` (keys: ``"h5"``, ``"layer{L}"``,
    ``"layer{L}/feature{f}"``)."""
    out_dir = Path(out_dir)
    paths = {"h5": out_dir / REPORT_FILE}
    for L in sorted(report.layers):
        paths[f"layer{L}"] = out_dir / f"layer{L}.png"
        for f in range(report.layers[L].features):
            paths[f"layer{L}/feature{f}"] = out_dir / f"layer{L}" / f"feature{f:03d}.png"
    return paths


def _draw_all(report: Report, targets: Dict[str, Path], tmp: Dict[str, Path]) -> None:
    src = report.attrs.get("data_source", "")
    for L in sorted(report.layers):
        lr = report.layers[L]
        title = (f"layer {L}: top {lr.k} of {report.attrs.get('num_images', '?')} images per "
                 f"feature ({src})\nleft: deconvnet projections, right: image patches")
        layer_figure(lr, title).savefig(tmp[f"layer{L}"], format="png")
        for f in range(lr.features):
            write_png(feature_panel(lr, f), tmp[f"layer{L}/feature{f}"])


def save_report(report: Report, out_dir: Union[str, Path], *, h5: bool = True,
                png: bool = True) -> List[Path]:
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
            check_writable_dir(out_dir / f"layer{L}")
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
    if not isinstance(report, Report):
        report = read_report_h5(report)
    return save_report(report, out_dir, h5=False, png=True)

