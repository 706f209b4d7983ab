"""Max-activation reports over whole data sets (Zeiler & Fergus, Figure 2): orchestration.

One pass over a data source keeps, for every feature of the chosen layers, the ``k``
images on which the feature fires most, and every image's maximum of every feature
(:mod:`.report_scan`). The kept seeds are then projected back to pixels with the
deconvnet and cut out beside the image patch under their receptive field
(:mod:`.report_layers`). The result is stored as one HDF5 file
(:mod:`deconvviz.store.report_h5`), with each layer's feature statistics, and drawn as
PNGs and a web report (:mod:`.report_render`). :func:`build_report` builds it in memory,
:func:`write_report` streams it to disk layer by layer and resumes an interrupted run
(:mod:`.report_partial`); :func:`report` is the notebook's verb,
``deconvviz.report(model, data, ...)``.

When the source has fewer than ``k`` images, the report keeps ``min(k, N)``
columns (every image, ranked): files never hold padding entries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from .. import __version__
from ..data.source import ImageSource
from ..engine.distributed import Ranks
from ..engine.net.network import layer_key
from ..errors import DeconvvizError, notice
from ..progress import Progress
from ..render.web import site_path
from ..store.atomic import check_folder_target, output_folder
from ..store.report_h5 import PROJECTION_DTYPES, REPORT_FILE, REPORT_FORMAT, REPORT_VERSION, Report
from .report_layers import kept_images, layer_parts, layer_reports, with_progress
from .report_partial import ReportInterrupted, kept_message, open_partial, partial_path
from .report_render import finish_report
from .report_scan import Scan, remove_scan_state, run_scan, scan_state_path, source_for

__all__ = ["build_report", "write_report", "report"]


def _attrs(model, source, scan: Scan, rule: str, command_line: str) -> dict:
    meta = getattr(model, "meta", None) or {}
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "package_version": __version__,
        "checkpoint_sha256": str(meta.get("sha256", "")),
        "checkpoint_path": str(meta.get("path", "")),
        "data_source": source.description,
        "data_kind": source.kind,
        "data_fingerprint": source.fingerprint,
        "split": source.split or "",
        "num_images": scan.n,
        "command_line": command_line,
        "top_k": int(scan.k),
        "feature_selection": json.dumps(scan.features),
        "layers": [i.index for i in scan.infos if isinstance(layer_key(i), int)],
        "nodes": [_group_name(layer_key(i)) for i in scan.infos],
        "rule": rule,
        "unpool": "switches",
        "mean": [float(v) for v in scan.mean],
        "std": [float(v) for v in scan.std],
        "image_size": list(source.image_size),
        "class_names": json.dumps(list(source.class_names)),
        "world_size": scan.world,
        "skipped_files": json.dumps(list(getattr(source, "skipped", []))),
    }


def _group_name(key) -> str:
    """File and group name of a layer key: ``layer2`` for a number, else the node name."""
    return f"layer{key}" if isinstance(key, int) else str(key)


def build_report(
    model: nn.Module,
    source: Union[ImageSource, str, Path],
    layers: Optional[Sequence[int]] = None,
    k: int = 9,
    *,
    batch_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    rule: str = "deconvnet",
    progress: bool = True,
    limit: Optional[int] = None,
    ranks: Optional[Ranks] = None,
    command_line: str = "",
    timings: Optional[dict] = None,
    features: Optional[Sequence[int]] = None,
) -> Optional[Report]:
    """Scan ``source`` once and build the paper's Figure 2 for every feature of ``layers``,
    in memory (:func:`write_report` streams it to disk instead).

    ``model``: a network loaded with :func:`~deconvviz.models.checkpoint.load_model`
    (its ``meta`` gives normalisation and checkpoint hash); ``source``: an
    :class:`~deconvviz.data.source.ImageSource` or anything ``--data`` takes
    (``"builtin"``, a folder, an image file; its test split, preprocessed for
    ``model``); ``layers``: layer numbers or node names (default: every conv
    layer); ``k``: images kept per feature (at most the number of images, with a
    notice); ``limit``: scan only the first ``limit`` images; ``features``: keep
    only these channels of every layer (default: all). With ``ranks`` (a
    :class:`~deconvviz.engine.distributed.Ranks` of a ``torchrun`` job), each
    rank scans its share in one agreed stage, the lists are merged exactly, and
    rank 0 projects and returns the report while other ranks return ``None``.
    The returned :class:`Report` is what
    :func:`~deconvviz.store.report_write.write_report_h5` stores and
    :func:`~deconvviz.runs.report_render.render_report` draws. ``timings``, if given,
    receives the seconds spent in ``"scan"`` (including the merge across ranks) and
    ``"project"`` (projections and patches), for benchmarks.
    """
    timings = {} if timings is None else timings
    source = source_for(model, source, limit)
    scan = run_scan(
        model,
        source,
        layers,
        k,
        batch_size=batch_size,
        device=device,
        rule=rule,
        progress=progress,
        limit=limit,
        ranks=ranks,
        timings=timings,
        features=features,
    )
    if scan is None:
        return None
    t0 = time.perf_counter()
    table = kept_images(source, scan)
    report = Report(attrs=_attrs(model, source, scan, rule, command_line), images=table)
    for lr in layer_reports(model, scan, table, rule=rule, device=device):
        report.layers[lr.key] = lr
    timings["project"] = time.perf_counter() - t0
    return report


def write_report(
    model: nn.Module,
    source: Union[ImageSource, str, Path],
    out_dir: Union[str, Path],
    layers: Optional[Sequence[int]] = None,
    k: int = 9,
    *,
    batch_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    rule: str = "deconvnet",
    progress: bool = True,
    limit: Optional[int] = None,
    ranks: Optional[Ranks] = None,
    command_line: str = "",
    png: bool = True,
    projection_dtype: str = "float32",
    timings: Optional[dict] = None,
    resume: bool = False,
    save_every: int = 20,
    html: bool = False,
    features: Optional[Sequence[int]] = None,
) -> Optional[List[Path]]:
    """Like :func:`build_report` (``source`` also a data-source string), but written to
    ``out_dir`` (``report.h5``, with ``png`` one PNG grid per layer and one PNG per
    feature, with ``html`` the web report ``out_dir/site/``, see
    :mod:`deconvviz.render.web`), one layer at a time, so peak memory does not grow
    with the number of layers or images. Returns the paths written (None on ranks
    that do not write; the site as its ``index.html``).
    ``projection_dtype``: ``"float32"`` or ``"float16"``.

    Phases, each with a progress bar (``progress``; plain lines in a log): the scan,
    the projections of each layer, the PNGs, the web report. The scan saves its
    state every ``save_every`` batches
    (:func:`~deconvviz.runs.report_scan.scan_state_path`); each layer is added to
    ``report.h5.partial`` (:func:`~deconvviz.runs.report_partial.partial_path`) as soon
    as it is projected. Ctrl-C or a crash keeps both (Ctrl-C raises
    :class:`~deconvviz.runs.report_partial.ReportInterrupted`, whose message says so),
    and ``resume=True`` continues the same run (same model, data, layers, k, features, rule, batch
    size, number of images and processes; otherwise one line and nothing is
    overwritten) from the last finished layer, or within the scan, to the same
    report as an uninterrupted run; with nothing saved it stops with one line.
    ``report.h5`` and the PNGs appear together, only when every one is complete, so
    an earlier report stays untouched until then; the saved state is then removed.
    ``timings`` receives ``"scan"`` and ``"project"`` (as :func:`build_report`), and with
    ``html`` the seconds spent writing the site, ``"html"`` (part of ``"project"``).
    """
    if projection_dtype not in PROJECTION_DTYPES:
        raise DeconvvizError(
            f"projection dtype must be one of {', '.join(PROJECTION_DTYPES)}; "
            f"got {projection_dtype!r}"
        )
    timings = {} if timings is None else timings
    rank, world = (ranks.rank, ranks.world) if ranks is not None else (0, 1)
    with output_folder(out_dir) as out_dir:  # removed again if the run fails
        if html:
            check_folder_target(site_path(out_dir))  # before the scan: fail fast
        state = scan_state_path(out_dir, rank, world)
        if resume and not state.is_file():
            raise DeconvvizError(
                f"--resume: nothing to resume in {out_dir} (no saved scan "
                f"state {state.name}); run without --resume"
            )
        source = source_for(model, source, limit)
        try:
            return _write_report(
                model,
                source,
                out_dir,
                layers,
                k,
                batch_size=batch_size,
                device=device,
                rule=rule,
                progress=progress,
                limit=limit,
                ranks=ranks,
                command_line=command_line,
                png=png,
                projection_dtype=projection_dtype,
                timings=timings,
                resume=resume,
                save_every=save_every,
                html=html,
                features=features,
            )
        except ReportInterrupted:
            raise
        except KeyboardInterrupt:
            kept = kept_message(out_dir) if rank == 0 else None
            if kept is None:
                raise
            raise ReportInterrupted(kept) from None


def _write_report(
    model,
    source,
    out_dir: Path,
    layers,
    k,
    *,
    batch_size,
    device,
    rule,
    progress,
    limit,
    ranks,
    command_line,
    png,
    projection_dtype,
    timings,
    resume,
    save_every,
    html,
    features,
) -> Optional[List[Path]]:
    scan = run_scan(
        model,
        source,
        layers,
        k,
        batch_size=batch_size,
        device=device,
        rule=rule,
        progress=progress,
        limit=limit,
        ranks=ranks,
        timings=timings,
        state_dir=out_dir,
        resume=resume,
        save_every=save_every,
        features=features,
    )
    if scan is None:
        return None
    t0 = time.perf_counter()
    attrs = _attrs(model, source, scan, rule, command_line)
    partial = partial_path(out_dir)
    table = kept_images(source, scan)
    writer = open_partial(partial, attrs, projection_dtype, table, resume=resume)
    total = len(scan.infos)
    with writer:
        done = set(writer.finished)
        if done:
            notice(f"resuming the report after {len(done)} of {total} finished layers in {partial}")
        for n, (head, chunks) in enumerate(
            layer_parts(model, scan, table, rule=rule, device=device)
        ):
            if head.name in done:
                continue
            with Progress(
                head.features,
                f"project {head.name} ({n + 1}/{total})",
                unit="feature",
                enabled=progress,
            ) as bar:
                writer.add_layer_chunks(head, with_progress(chunks, bar), table.pixels.shape[1])
    targets = finish_report(
        out_dir, partial, png=png, html=html, progress=progress, timings=timings
    )
    remove_scan_state(out_dir)
    timings["project"] = time.perf_counter() - t0
    return targets


# --- the notebook route (issue 20): ``deconvviz.report(model, data, ...)`` -------------------


def report(
    model: nn.Module,
    data="builtin",
    layers: Optional[Sequence] = None,
    top: int = 9,
    out: Union[str, Path] = "outputs/report",
    *,
    split: Optional[str] = "test",
    limit: Optional[int] = None,
    features: Optional[Sequence[int]] = None,
    batch_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    rule: str = "deconvnet",
    png: bool = False,
    html: bool = False,
    progress: bool = True,
    projection_dtype: str = "float32",
):
    """Scan ``data`` with ``model`` and write a report, as ``deconvviz report`` does, to
    ``out/report.h5``; returns it opened as a :class:`deconvviz.explore.Report` (what
    each feature detects, ``report.feature(node, i)``, ``report.features_for("dog")``,
    inline display in notebooks).

    ``model``: from :func:`deconvviz.load_model`; ``data``: anything ``--data`` takes
    (``"builtin"``, a folder, ...), a :func:`deconvviz.load_data` dataset or an
    :class:`~deconvviz.data.source.ImageSource`; ``layers``: layer numbers or node
    names (default: every conv layer, or every node with image patches); ``top``:
    images kept per feature; ``limit``: scan the first ``limit`` images only;
    ``features``: keep only these channels of every layer; ``png`` / ``html``: also
    the PNGs / the web report. Available as ``deconvviz.report(...)``.
    """
    from ..explore import Report as ExploredReport

    source = source_for(model, data, limit, split)
    layers = (
        None if layers is None else ([layers] if isinstance(layers, (int, str)) else list(layers))
    )
    line = (
        f"deconvviz.report(model, {source.description!r}, layers={layers!r}, top={top}, "
        f"out={str(out)!r})"
    )
    write_report(
        model,
        source,
        out,
        layers,
        top,
        batch_size=batch_size,
        device=device,
        rule=rule,
        progress=progress,
        limit=limit,
        command_line=line,
        png=png,
        projection_dtype=projection_dtype,
        html=html,
        features=features,
    )
    return ExploredReport(Path(out) / REPORT_FILE)
