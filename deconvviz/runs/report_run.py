"""Max-activation reports over whole data sets (Zeiler & Fergus, Figure 2): orchestration.

One pass over a data source keeps, for every feature of the chosen layers, the
``k`` images on which the feature fires most (:mod:`deconvviz.engine.topk`,
merged across ``torchrun`` ranks by :mod:`deconvviz.engine.distributed`). The
kept seeds are then projected back to pixels with the deconvnet in batched
passes (:mod:`deconvviz.engine.deconv.seeds`) and cut out beside the image patch under
their receptive field (:mod:`deconvviz.engine.net.geometry`). The result is stored
as one HDF5 file (:mod:`deconvviz.store.report_h5`) and drawn as PNGs
(:mod:`deconvviz.render.report_png`); :func:`render_report` redraws the PNGs
from the HDF5 file alone. The same pass records every image's maximum of every
feature, from which each layer gets its feature statistics
(:mod:`deconvviz.engine.statistics`). :func:`report` is the notebook's verb,
``deconvviz.report(model, data, ...)``.

When the source has fewer than ``k`` images, the report keeps ``min(k, N)``
columns (every image, ranked): files never hold padding entries.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.resolve import resolve_source
from ..data.source import ImageSource
from ..engine.deconv.deconvnet import RULES
from ..engine.deconv.seeds import project_seeds
from ..engine.distributed import Ranks, gather_topk
from ..engine.net.geometry import extract_patches, windows_for
from ..engine.net.network import Layer, graph_of, layer_key, require_spatial, spatial
from ..engine.statistics import MaximaRecorder, feature_statistics, gather_maxima
from ..engine.topk import (
    TopK,
    batch_size_for,
    empty_topk,
    finalize_topk,
    layer_infos,
    merge_topk,
    normalization_of,
    scan_topk,
)
from ..errors import DeconvvizError, notice
from ..models.torchfile import TorchFileError, read_torch_file
from ..progress import Progress
from ..render.report_png import feature_png, layer_figure, write_png
from ..render.web import SiteWriter, site_path, timestamp
from ..store.atomic import (
    atomic_folder,
    atomic_path,
    atomic_paths,
    check_folder_target,
    check_writable_dir,
    output_folder,
)
from ..store.h5 import attr_value, h5py_module
from ..store.report_h5 import (
    PROJECTION_DTYPES,
    REPORT_FILE,
    REPORT_FORMAT,
    REPORT_VERSION,
    DamagedPartialError,
    ImageTable,
    LayerReport,
    Report,
    ReportWriter,
    class_names,
    features_per_chunk,
    finished_layers,
    layer_names,
    open_report,
    write_report_h5,
)
from ..store.statistics_h5 import FeatureStatistics, MaximaState

__all__ = [
    "build_report",
    "write_report",
    "report_paths",
    "save_report",
    "render_report",
    "scan_state_path",
    "partial_path",
    "check_features",
    "ReportInterrupted",
    "report",
]

PARTIAL_SUFFIX = ".partial"


def partial_path(out_dir: Union[str, Path]) -> Path:
    """Where an unfinished report lives, ``OUT/report.h5.partial``: its finished layers,
    kept after Ctrl-C or a crash for ``--resume``; renamed to ``report.h5`` when complete."""
    return Path(out_dir) / (REPORT_FILE + PARTIAL_SUFFIX)


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`write_report`; its message says what was kept for ``--resume``."""


class _Scan:
    """What the scan found (on the rank that writes): layers, top-k lists, kept images,
    every image's maxima (``maxima``: ``{layer: MaximaRecorder}``, all channels), the
    source's ``labels`` and ``classes`` (for the feature statistics) and the network's
    traced ``graph`` (made once for the whole run)."""

    def __init__(
        self,
        infos,
        tops,
        n,
        mean,
        std,
        world,
        k,
        features=None,
        maxima=None,
        labels=None,
        classes=0,
        graph=None,
    ):
        self.infos, self.tops, self.n = infos, tops, n
        self.graph = graph
        self.mean, self.std, self.world = mean, std, world
        self.k = k
        #: The features kept of every layer (sorted channel numbers), None: all.
        self.features = features
        self.maxima, self.labels, self.classes = maxima, labels, classes

    def selected(self) -> "_Scan":
        """The scan with each layer's top-k lists cut to :attr:`features`."""
        if self.features is None:
            return self
        rows = torch.as_tensor(self.features, dtype=torch.long)
        tops = {
            L: TopK(t.activation[rows], t.image_index[rows], t.position[rows])
            for L, t in self.tops.items()
        }
        return _Scan(
            self.infos,
            tops,
            self.n,
            self.mean,
            self.std,
            self.world,
            self.k,
            self.features,
            self.maxima,
            self.labels,
            self.classes,
            self.graph,
        )


def _layer_title(info) -> str:
    key = layer_key(info)
    return f"layer {key}" if isinstance(key, int) else f"node {key}"


def check_features(infos, features: Optional[Sequence[int]]) -> Optional[List[int]]:
    """``features`` sorted without repeats, after checking each is a channel of every
    layer in ``infos`` (one line naming the first that is not); None stays None (all)."""
    if features is None:
        return None
    ids = sorted({int(f) for f in features})
    if not ids:
        raise DeconvvizError("no features chosen")
    for info in infos:
        bad = [f for f in ids if not 0 <= f < info.features]
        if bad:
            raise DeconvvizError(
                f"feature {bad[0]} is out of range: {_layer_title(info)} has "
                f"{info.features} features (0..{info.features - 1})"
            )
    return ids


SCAN_STATE = ".scan-state{suffix}.pt"


def scan_state_path(out_dir: Union[str, Path], rank: int = 0, world: int = 1) -> Path:
    """Where a report's resumable scan state lives (one file per rank under torchrun)."""
    return Path(out_dir) / SCAN_STATE.format(suffix="" if world <= 1 else f".rank{rank}of{world}")


class _ScanState:
    """The top-k lists so far and where the scan goes on, saved atomically every few
    batches so that ``--resume`` continues an interrupted scan to the same result."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity

    def load(self, k_features: Dict[Layer, int], k: int):
        """``(tops, next image)`` from the saved file, checked against this run."""
        try:
            state = read_torch_file(self.path, "a deconvviz scan state")
            saved = state["identity"]
            tops = {
                int(L) if L.isdigit() else L: TopK(t["activation"], t["image_index"], t["position"])
                for L, t in state["tops"].items()
            }
            start = int(state["next"])
        except TorchFileError as exc:
            raise DeconvvizError(
                f"--resume: cannot read the saved scan state {self.path} "
                f"({exc.why}); remove it or run without --resume"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any damage: one line
            raise DeconvvizError(
                f"--resume: cannot read the saved scan state {self.path} "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                "; remove it or run without --resume"
            ) from None
        differ = [key for key in self.identity if saved.get(key) != self.identity[key]]
        if differ:
            raise DeconvvizError(
                f"--resume: the saved scan state {self.path} is from another "
                f"run (its {', '.join(differ)} differ); remove it or run "
                "without --resume"
            )
        for L, F_ in k_features.items():
            if L not in tops or tuple(tops[L].activation.shape) != (F_, k):
                raise DeconvvizError(
                    f"--resume: the saved scan state {self.path} is damaged "
                    f"(layer {L}); remove it or run without --resume"
                )
        return tops, start

    def save(self, tops: Dict[Layer, TopK], next_image: int) -> None:
        state = {
            "identity": self.identity,
            "next": int(next_image),
            "tops": {
                str(L): {
                    "activation": t.activation,
                    "image_index": t.image_index,
                    "position": t.position,
                }
                for L, t in tops.items()
            },
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def _scan(
    model,
    source,
    layers,
    k,
    *,
    batch_size,
    device,
    rule,
    progress,
    limit,
    ranks,
    timings,
    state_dir: Optional[Path] = None,
    resume: bool = False,
    save_every: int = 20,
    features: Optional[Sequence[int]] = None,
) -> Optional[_Scan]:
    """Scan ``source`` (each rank its share, merged exactly); None on ranks that do not write.

    With ``state_dir`` the scan runs in segments of ``save_every`` batches (per rank)
    and saves its state after each (:func:`scan_state_path`); ``resume`` first
    loads a saved state of the same run. Segments merge exactly (the merge is
    associative and tie-stable), so the result equals one uninterrupted scan.
    """
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    mean, std = normalization_of(model)
    n = len(source) if limit is None else min(len(source), int(limit))
    if n < 1:
        raise DeconvvizError(f"{source.description} has no images to scan")
    graph = graph_of(model, source.image_size)  # traced once for the whole run
    infos = layer_infos(model, layers, source.image_size, graph)
    if layers:
        for info in infos:
            require_spatial(graph, info)
    else:  # by default, the nodes that have image patches
        infos = [i for i in infos if spatial(graph, i)]
    features = check_features(infos, features)
    if k > n:
        notice(f"top {k} is more than the {n} images scanned; each feature keeps all {n}")
        k = n
    if batch_size is None:
        batch_size = batch_size_for(model, infos, source.image_size, graph=graph)
    ranks = ranks if ranks is not None else Ranks(0, 1, str(device))
    rank, world = ranks.rank, ranks.world
    t0 = time.perf_counter()
    # Each rank's share of images, for its progress bar (batches are dealt round-robin).
    mine = sum(
        min(n, s + batch_size) - s
        for b, s in enumerate(range(0, n, batch_size))
        if b % world == rank
    )
    with ranks.stage("the scan"):
        state = None
        if state_dir is not None:
            meta = getattr(model, "meta", None) or {}
            state = _ScanState(
                scan_state_path(state_dir, rank, world),
                {
                    "checkpoint_sha256": str(meta.get("sha256", "")),
                    "data_fingerprint": source.fingerprint,
                    "layers": [str(layer_key(i)) for i in infos],
                    "top_k": int(k),
                    "batch_size": int(batch_size),
                    "num_images": int(n),
                    "world_size": int(world),
                },
            )
        tops = {layer_key(i): empty_topk(i.features, k) for i in infos}
        # Feature statistics (issue 20): every image's maxima, recorded in the same pass
        # and kept beside the scan state, so a resumed report computes the same numbers.
        maxima = {layer_key(i): MaximaRecorder(i.features, n) for i in infos}
        kept = None if state is None else MaximaState(state.path.with_suffix(""), len(infos))
        start = 0
        if state is not None and kept is not None and resume:  # made together
            tops, start = state.load({layer_key(i): i.features for i in infos}, k)
            kept.load([m.values.numpy() for m in maxima.values()])
            if start < n:
                notice(f"resuming the scan at image {start} of {n} from {state.path}")
        done = sum(
            min(n, s + batch_size) - s
            for b, s in enumerate(range(0, start, batch_size))
            if b % world == rank
        )
        # Segments of whole rounds of batches keep the round-robin dealing of one scan.
        step = n if state is None else max(1, int(save_every)) * batch_size * world
        with Progress(
            mine,
            "scan" if world == 1 else f"scan (rank {rank}/{world})",
            enabled=progress and rank == 0,
            initial=done,
        ) as bar:
            for s0 in range(start, n, step):
                part = scan_topk(
                    model,
                    source,
                    [layer_key(i) for i in infos],
                    k,
                    batch_size=batch_size,
                    device=device,
                    progress=bar,
                    shard=(rank, world),
                    start=s0,
                    stop=min(n, s0 + step),
                    mean=mean,
                    std=std,
                    maxima=maxima,
                    graph=graph,
                )
                tops = (
                    part
                    if s0 == 0 and state is None
                    else {L: merge_topk(tops[L], part[L], k) for L in tops}
                )
                if state is not None and kept is not None:
                    # The maxima first: the state says where they end.
                    kept.save([m.values.numpy() for m in maxima.values()], s0, min(n, s0 + step))
                    state.save(tops, min(n, s0 + step))
    if world > 1:
        tops = gather_topk(tops, device)
        for rec in maxima.values():
            rec.values = gather_maxima(rec.values, device)
        if rank != 0:
            return None
    tops = {L: finalize_topk(t, n) for L, t in tops.items()}
    timings["scan"] = time.perf_counter() - t0
    return _Scan(
        infos,
        tops,
        n,
        mean,
        std,
        world,
        k,
        features,
        maxima,
        source.labels[:n],
        len(source.class_names),
        graph,
    ).selected()


def _attrs(model, source, scan: _Scan, rule: str, command_line: str) -> dict:
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


def _kept_images(source: ImageSource, scan: _Scan) -> ImageTable:
    """Every kept image, read once whatever the number of layers that keep it."""
    wanted = sorted(
        {int(i) for t in scan.tops.values() for i in t.image_index.reshape(-1).tolist()}
    )
    pixels = source.read_indices(wanted)
    paths = list(source.paths) if source.paths else []
    return ImageTable(
        index=np.asarray(wanted, dtype=np.int64),
        pixels=pixels.numpy().astype(np.uint8, copy=False),
        label=source.labels[wanted].numpy().astype(np.int64) if wanted else np.zeros(0, np.int64),
        path=[str(paths[i]) if paths else "" for i in wanted],
    )


def _layer_parts(
    model, scan: _Scan, table: ImageTable, *, rule, device
) -> Iterator[Tuple[LayerReport, Iterator[Tuple[int, np.ndarray, np.ndarray]]]]:
    """Per layer: its report without projections and patches, and an iterator that
    projects and cuts them one chunk of features at a time (see
    :func:`~deconvviz.store.report_h5.features_per_chunk`), so memory holds one chunk."""
    images = {int(i): torch.from_numpy(table.pixels[j]) for j, i in enumerate(table.index)}
    for info in scan.infos:
        key = layer_key(info)
        top = scan.tops[key]
        F_, kk = top.image_index.shape
        rows = np.searchsorted(table.index, top.image_index.reshape(-1).numpy())
        box, origin = windows_for(info, top.position.reshape(-1, 2))
        head = LayerReport(
            layer=info.index if info.index is not None else -1,
            node="" if isinstance(key, int) else key,
            path=str(info.path),
            op=info.what,
            output_size=info.output_size,
            rf_size=info.rf_size,
            rf_jump=info.rf_jump,
            rf_start=info.rf_start,
            activation=top.activation.numpy().astype(np.float32),
            image_index=top.image_index.numpy(),
            label=table.label[rows].reshape(F_, kk).astype(np.int64),
            position=top.position.numpy(),
            projection=None,
            patch=None,
            patch_box=box.reshape(F_, kk, 4).numpy(),
            patch_origin=origin.reshape(F_, kk, 2).numpy(),
            feature=None if scan.features is None else np.asarray(scan.features, np.int64),
        )
        if scan.maxima is not None:  # feature statistics (issue 20), one row per kept feature
            values = scan.maxima[key].values.numpy()
            head.stats = FeatureStatistics(
                **feature_statistics(
                    values if scan.features is None else values[head.feature_ids],
                    scan.labels.numpy(),
                    scan.classes,
                    head.label,
                )
            )
        yield (
            head,
            _chunks(
                model,
                info,
                key,
                top,
                table,
                images,
                rule=rule,
                device=device,
                scan=scan,
                ids=head.feature_ids,
            ),
        )


def _runs(ids: np.ndarray) -> List[Tuple[int, int]]:
    """``(first row, rows)`` of each run of consecutive channel numbers in ``ids``."""
    runs, start = [], 0
    for r in range(1, len(ids) + 1):
        if r == len(ids) or ids[r] != ids[r - 1] + 1:
            runs.append((start, r - start))
            start = r
    return runs


def _chunks(model, info, key, top: TopK, table: ImageTable, images, *, rule, device, scan, ids):
    F_, kk = top.image_index.shape
    step = features_per_chunk(kk, table.pixels.shape[1], info.rf_size)
    # Row r is channel ids[r]: each call projects a run of consecutive channels.
    for r0, count in _runs(ids):
        for f0 in range(r0, r0 + count, step):
            f1 = min(r0 + count, f0 + step)
            part = TopK(top.activation[f0:f1], top.image_index[f0:f1], top.position[f0:f1])
            n = f1 - f0
            projections, _ = project_seeds(
                model,
                images,
                {key: part},
                rule=rule,
                device=device,
                mean=scan.mean,
                std=scan.std,
                windows=True,
                first_feature=int(ids[f0]),
                graph=scan.graph,
            )
            flat_idx = part.image_index.reshape(-1)
            rows = np.searchsorted(table.index, flat_idx.numpy())
            seed_pix = (
                torch.from_numpy(table.pixels[rows])
                if flat_idx.numel()
                else torch.zeros((0, 3) + tuple(info.image_size), dtype=torch.uint8)
            )
            patch, _, _ = extract_patches(info, seed_pix, part.position.reshape(-1, 2))
            yield (f0, projections[key].numpy(), patch.reshape(n, kk, *patch.shape[1:]).numpy())


def _layer_reports(model, scan: _Scan, table: ImageTable, *, rule, device) -> Iterator[LayerReport]:
    """Each layer whole, in memory (for :func:`build_report`)."""
    for head, chunks in _layer_parts(model, scan, table, rule=rule, device=device):
        parts = list(chunks)  # a layer has at least one feature: one chunk
        yield replace(
            head,
            projection=np.concatenate([p for _, p, _ in parts]),
            patch=np.concatenate([q for _, _, q in parts]),
        )


def _as_source(
    model: nn.Module,
    source: Union[ImageSource, str, Path, None],
    limit: Optional[int],
    split: Optional[str] = "test",
) -> ImageSource:
    """An :class:`ImageSource` as given (or the source of a
    :func:`deconvviz.load_data` dataset), or resolved from anything ``--data`` takes
    (``"builtin"``, a folder, an image file; its ``split``), preprocessed the way
    ``model`` expects and, for image folders, decoding only the first ``limit`` files."""
    if isinstance(source, ImageSource):
        return source
    inner = getattr(source, "source", None)
    if isinstance(inner, ImageSource):
        return inner
    if source is not None and not isinstance(source, (str, Path)):
        raise DeconvvizError(
            f"source must be an ImageSource or a data-source string like "
            f"'builtin' or a folder; got {type(source).__name__}"
        )
    from ..data.preprocess import Preprocessing
    from ..models.checkpoint import read_checkpoint

    meta = getattr(model, "meta", None) or read_checkpoint(None)
    return resolve_source(
        None if source is None else str(source),
        split=split,
        limit=limit,
        **Preprocessing.from_meta(meta).source_kwargs(),
    )


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
    :func:`~deconvviz.store.report_h5.write_report_h5` stores and
    :func:`render_report` draws. ``timings``, if given, receives the seconds spent
    in ``"scan"`` (including the merge across ranks) and ``"project"``
    (projections and patches), for benchmarks.
    """
    timings = {} if timings is None else timings
    source = _as_source(model, source, limit)
    scan = _scan(
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
    table = _kept_images(source, scan)
    report = Report(attrs=_attrs(model, source, scan, rule, command_line), images=table)
    for lr in _layer_reports(model, scan, table, rule=rule, device=device):
        report.layers[lr.key] = lr
    timings["project"] = time.perf_counter() - t0
    return report


def _with_progress(chunks, bar: Progress):
    for f0, projection, patch in chunks:
        yield f0, projection, patch
        bar.update(projection.shape[0])


def _kept_message(out_dir: Path) -> Optional[str]:
    """What an interrupted :func:`write_report` keeps for ``--resume``, in words."""
    partial, state = partial_path(out_dir), scan_state_path(out_dir)
    done = total = 0
    if partial.is_file():
        try:
            with h5py_module().File(partial, "r") as f:
                done = len(finished_layers(f))
                total = len(layer_names({k: attr_value(v) for k, v in f.attrs.items()}))
        except (OSError, KeyError):
            done = 0
    if done:
        return (
            f"interrupted after {done} of {total} layers; the finished layers are kept in "
            f"{partial} (an earlier {REPORT_FILE} is left as it was): run the same command "
            "with --resume to finish the report"
        )
    if state.is_file():
        return (
            f"interrupted; the scan so far is saved in {state}: run the same command with "
            "--resume to continue"
        )
    return None


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
    state every ``save_every`` batches (:func:`scan_state_path`); each layer is
    added to ``report.h5.partial`` (:func:`partial_path`) as soon as it is
    projected. Ctrl-C or a crash keeps both (Ctrl-C raises
    :class:`ReportInterrupted`, whose message says so), and ``resume=True``
    continues the same run (same model, data, layers, k, features, rule, batch
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
        source = _as_source(model, source, limit)
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
            kept = _kept_message(out_dir) if rank == 0 else None
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
    scan = _scan(
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
    table = _kept_images(source, scan)
    writer = None
    if resume and partial.is_file():
        try:  # (another run's file: one line, kept as it is)
            writer = ReportWriter(partial, attrs, projection_dtype, append=True)
        except DamagedPartialError as exc:
            notice(f"{exc}; projecting every layer again")
    elif partial.exists():
        notice(
            f"starting a new report: the unfinished {partial} is replaced (--resume continues it)"
        )
    if writer is None:
        writer = ReportWriter(partial, attrs, projection_dtype)
        writer.add_images(table)
    total = len(scan.infos)
    with writer:
        done = set(writer.finished)
        if done:
            notice(f"resuming the report after {len(done)} of {total} finished layers in {partial}")
        for n, (head, chunks) in enumerate(
            _layer_parts(model, scan, table, rule=rule, device=device)
        ):
            if head.name in done:
                continue
            with Progress(
                head.features,
                f"project {head.name} ({n + 1}/{total})",
                unit="feature",
                enabled=progress,
            ) as bar:
                writer.add_layer_chunks(head, _with_progress(chunks, bar), table.pixels.shape[1])
    targets = _finish(
        out_dir, partial, attrs, png=png, html=html, progress=progress, timings=timings
    )
    for saved in out_dir.glob(SCAN_STATE.format(suffix="*")):
        saved.unlink()  # the report is complete: nothing left to resume
    for saved in out_dir.glob(MaximaState.PATTERN.format(stem=SCAN_STATE.format(suffix="*")[:-3])):
        saved.unlink()
    timings["project"] = time.perf_counter() - t0
    return targets


def _finish(
    out_dir: Path,
    partial: Path,
    attrs: dict,
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


def _group_name(key) -> str:
    """File and group name of a layer key: ``layer2`` for a number, else the node name."""
    return f"layer{key}" if isinstance(key, int) else str(key)


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

    source = _as_source(model, data, limit, split)
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
