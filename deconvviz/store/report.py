"""The report file: HDF5 layout ``deconvviz-report`` (see the README's file layouts).

A :class:`Report` is root metadata, the kept images (:class:`ImageTable`) and one
:class:`LayerReport` per layer. :class:`ReportWriter` writes a file layer by
layer, and each layer's projections and patches in chunks of features, as they
are computed (so memory grows with neither the number of layers nor of features);
:func:`read_report_h5` reads and checks one. Version 2 stores each projection
cut to its receptive-field window (the same window as its patch), the kept
images themselves, and every layer dataset chunked per feature and compressed;
version 1 files (whole-image projections, no images) are still read, their
projections cut to the same windows on reading. Version 3 adds to each layer its
``feature`` numbers (a report may keep some features of a layer only), its feature
statistics over the whole scan (:mod:`deconvviz.store.statistics`, one row per kept
feature) and a ``complete`` attribute set once the layer is fully written: a report is
first written as ``report.h5.partial`` one finished layer at a time (flushed after
each), a resumed run appends the missing layers, and the file is renamed to
``report.h5`` only when every layer is complete; a reader refuses a layer not marked
complete. Versions 1 and 2 read with ``LayerReport.stats = None``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DeconvvizError
from .h5 import STAMPED, attr_value, h5py_module, open_checked, stamp
from .statistics import FeatureStatistics, read_statistics, write_statistics

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "REPORT_FILE",
    "PROJECTION_DTYPES",
    "LayerReport",
    "ImageTable",
    "Report",
    "ReportWriter",
    "write_report_h5",
    "read_report_h5",
    "layer_names",
    "class_names",
    "features_per_chunk",
    "CHUNK_BYTES",
    "SEEDS_PER_CHUNK",
    "open_report",
    "finished_layers",
    "RUN_ATTRS",
    "DamagedPartialError",
]

REPORT_FORMAT = "deconvviz-report"
REPORT_VERSION = 3  # 3: feature numbers, complete marks, per-feature statistics
REPORT_FILE = "report.h5"
PROJECTION_DTYPES = ("float32", "float16")

_LAYER_DATASETS = {
    "activation": np.float32,
    "image_index": np.int64,
    "position": np.int64,
    "projection": np.float32,
    "patch": np.uint8,
    "patch_box": np.int64,
    "patch_origin": np.int64,
    "label": np.int64,
}
_ROOT_ATTRS = (
    "format",
    "format_version",
    "package_version",
    "checkpoint_sha256",
    "data_source",
    "split",
    "num_images",
    "command_line",
    "top_k",
    "layers",
)
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_STREAMED = ("projection", "patch")

#: Bytes of projections (float32) and patches one chunk of features may hold while a
#: layer is computed and written (see :func:`features_per_chunk`).
CHUNK_BYTES = 256 * 2**20
#: Seeds (features x k) projected together at most, so that progress moves every few
#: seconds on a large network; large enough that each chunk's recorded forward pass
#: is shared by many seeds.
SEEDS_PER_CHUNK = 512

#: Root attributes that must agree before a run appends to an unfinished report.
RUN_ATTRS = (
    "checkpoint_sha256",
    "data_fingerprint",
    "num_images",
    "top_k",
    "nodes",
    "rule",
    "projection_dtype",
    "feature_selection",
    "image_size",
)


def features_per_chunk(k: int, channels: int, rf_size: Sequence[int]) -> int:
    """Features of a layer computed and written together: as many as keep their
    projections and patches within :data:`CHUNK_BYTES` and their seeds within
    :data:`SEEDS_PER_CHUNK` (a whole small layer; one chunk per few dozen features of
    a deep VGG-16 layer at 224 px). Depends on nothing but its arguments, so the
    chunks, and the numbers, are the same on every run."""
    per = max(1, k * channels * int(rf_size[0]) * int(rf_size[1]) * 5)
    return max(1, min(CHUNK_BYTES // per, SEEDS_PER_CHUNK // max(1, k)))


@dataclass
class LayerReport:
    """Everything the report holds for one layer (``F`` features, ``k`` kept images each).

    ``activation (F, k)`` float32 descending; ``image_index (F, k)`` int64;
    ``label (F, k)`` int64 (-1 where unknown); ``position (F, k, 2)`` int64;
    ``projection (F, k, 3, rf_h, rf_w)`` raw and signed (float32, or float16 when
    the report was written so), cut to the seed's receptive-field window exactly
    like its patch; ``patch (F, k, 3, rf_h, rf_w)`` uint8; ``patch_box (F, k, 4)``
    int64 (y0, x0, y1, x1) in image pixels, end exclusive; ``patch_origin
    (F, k, 2)`` int64, the window's unclipped top-left corner (see
    :func:`deconvviz.engine.net.geometry.extract_patches`). Window pixels outside
    the image are zero in both. ``stats``: the layer's
    :class:`~deconvviz.store.statistics.FeatureStatistics` over the whole scan (None
    in files of format version 1 and 2).
    """

    layer: int
    path: str
    output_size: Tuple[int, int]
    rf_size: Tuple[int, int]
    rf_jump: Tuple[int, int]
    rf_start: Tuple[int, int]
    activation: np.ndarray
    image_index: np.ndarray
    label: np.ndarray
    position: np.ndarray
    projection: Optional[np.ndarray]
    patch: Optional[np.ndarray]
    patch_box: np.ndarray
    patch_origin: np.ndarray
    node: str = ""
    feature: Optional[np.ndarray] = None
    stats: Optional[FeatureStatistics] = None
    op: str = ""  # what the node calls: ``Conv2d``, ``SiLU``, ``SqueezeExcitation``, ``F.gelu``

    @property
    def features(self) -> int:
        return int(self.activation.shape[0])

    @property
    def feature_ids(self) -> np.ndarray:
        """``(F,)`` int64: the channel number of each row (a report of some features of
        a layer keeps only those rows)."""
        if self.feature is None:
            return np.arange(self.features, dtype=np.int64)
        return np.asarray(self.feature, dtype=np.int64)

    @property
    def k(self) -> int:
        return int(self.activation.shape[1])

    @property
    def name(self) -> str:
        """The layer's group (and file) name: ``layer2`` for a numbered layer, else the
        graph node's name (``layer3.1.relu_1``)."""
        return self.node or f"layer{self.layer}"

    @property
    def key(self):
        """How :attr:`Report.layers` keys it: the layer number, or the node name."""
        return self.node or self.layer

    @property
    def title(self) -> str:
        return f"node {self.node}" if self.node else f"layer {self.layer}"


@dataclass
class ImageTable:
    """The distinct images a report keeps, in ascending source index.

    ``index (M,)`` int64 source indices; ``pixels (M, 3, H, W)`` uint8 as the
    network saw them; ``label (M,)`` int64 (-1: unlabelled); ``path``: the file of
    each image (empty strings where the source has no files).
    """

    index: np.ndarray
    pixels: np.ndarray
    label: np.ndarray
    path: List[str]

    def row(self, image_index: int) -> int:
        """Row of source index ``image_index`` (a :class:`KeyError` if not kept)."""
        j = int(np.searchsorted(self.index, image_index))
        if j >= len(self.index) or int(self.index[j]) != int(image_index):
            raise KeyError(image_index)
        return j


@dataclass
class Report:
    """A whole report: root metadata ``attrs``, the kept ``images`` (None in version 1
    files) and a :class:`LayerReport` per layer."""

    attrs: dict
    layers: Dict[int, LayerReport] = field(default_factory=dict)
    images: Optional[ImageTable] = None

    def __repr__(self) -> str:  # one line, not every attribute and array (issue 20)
        layers = ", ".join(
            f"{lr.name} ({lr.features} features, top {lr.k})" for lr in self.layers.values()
        )
        return (
            f"Report({layers or 'no layers'}; {self.attrs.get('num_images', '?')} images of "
            f"{self.attrs.get('data_source', '?')}, format version "
            f"{self.attrs.get('format_version', '?')})"
        )


class ReportWriter:
    """``with ReportWriter(path, attrs) as w: w.add_images(t); w.add_layer(lr); ...``

    Writes straight to ``path`` (callers write to a temporary or ``.partial`` path
    and rename): the stamped root attributes first, then the images, then each
    layer as it comes, every dataset without timestamps so the same report gives
    the same bytes. Each layer is marked ``complete`` and the file flushed once the
    layer is written; a layer cut short by an exception (Ctrl-C included) is
    removed again, so the file keeps exactly its finished layers.
    ``projection_dtype``: ``"float32"`` or ``"float16"``.

    ``append=True`` continues an unfinished file of the same run (its
    :data:`RUN_ATTRS` must equal ``attrs``; otherwise one line): the layers it
    finished are :attr:`finished`, anything unfinished in it is dropped.
    """

    def __init__(
        self,
        path: Union[str, Path],
        attrs: dict,
        projection_dtype: str = "float32",
        append: bool = False,
    ):
        if projection_dtype not in PROJECTION_DTYPES:
            raise DeconvvizError(
                f"projection dtype must be one of {', '.join(PROJECTION_DTYPES)}; "
                f"got {projection_dtype!r}"
            )
        self.path = Path(path)
        self.dtype = np.dtype(projection_dtype)
        attrs = {k: v for k, v in attrs.items() if k not in STAMPED}
        attrs["projection_dtype"] = projection_dtype
        self._f = None
        if append:
            self._f = _open_unfinished(self.path, attrs)
            return
        h5py = h5py_module()
        self._f = h5py.File(self.path, "w", track_order=True)
        stamp(self._f, REPORT_FORMAT, REPORT_VERSION, attrs)

    @property
    def finished(self) -> List[str]:
        """Names of the layers written completely, in order (the images come first)."""
        return finished_layers(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def add_images(self, table: ImageTable) -> None:
        h5py = h5py_module()
        g = self._f.create_group("images", track_order=True)
        g.create_dataset("index", data=np.asarray(table.index, np.int64), track_times=False)
        pixels = np.ascontiguousarray(table.pixels, dtype=np.uint8)
        kw = dict(_COMPRESSION, chunks=(1,) + pixels.shape[1:]) if pixels.size else {}
        g.create_dataset("pixels", data=pixels, track_times=False, **kw)
        g.create_dataset("label", data=np.asarray(table.label, np.int64), track_times=False)
        g.create_dataset(
            "path", data=np.asarray(list(table.path), dtype=h5py.string_dtype()), track_times=False
        )
        g.attrs["complete"] = True
        self._f.flush()

    def add_layer(self, lr: LayerReport) -> LayerReport:
        """Write a whole in-memory layer (in the same chunks of features as
        :meth:`add_layer_chunks`, so both give the same bytes)."""
        channels = lr.patch.shape[2]
        n = features_per_chunk(lr.k, channels, lr.rf_size)
        return self.add_layer_chunks(
            lr,
            (
                (f0, lr.projection[f0 : f0 + n], lr.patch[f0 : f0 + n])
                for f0 in range(0, lr.features, n)
            ),
            channels,
        )

    def add_layer_chunks(
        self,
        head: LayerReport,
        chunks: Iterable[Tuple[int, np.ndarray, np.ndarray]],
        channels: int = 3,
    ) -> LayerReport:
        """Write one layer whose projections and patches come in chunks of features.

        ``head`` holds everything but ``projection`` and ``patch`` (those may be
        None); ``chunks`` yields ``(first feature, projection (n, k, C, rf_h, rf_w),
        patch (n, k, C, rf_h, rf_w))`` in order, each written (compressed, one HDF5
        chunk per feature) as it comes, so only one chunk is ever in memory.
        Returns the layer with ``projection`` and ``patch`` read from this file
        one feature at a time (valid while the writer is open).
        """
        try:
            return self._add_layer_chunks(head, chunks, channels)
        except BaseException:
            if self._f is not None and head.name in self._f:
                del self._f[head.name]  # never leave a half-written layer
                self._f.flush()
            raise

    def _add_layer_chunks(self, head: LayerReport, chunks, channels: int) -> LayerReport:
        g = self._f.create_group(head.name, track_order=True)
        g.attrs["complete"] = False
        g.attrs["layer"] = head.layer
        g.attrs["node"] = head.node
        g.attrs["path"] = head.path
        g.attrs["op"] = head.op
        g.attrs["features"] = head.features
        g.attrs["k"] = head.k
        for name in ("output_size", "rf_size", "rf_jump", "rf_start"):
            g.attrs[name] = np.asarray(getattr(head, name), dtype=np.int64)
        shape = (head.features, head.k, channels) + tuple(int(v) for v in head.rf_size)
        for name, dtype in _LAYER_DATASETS.items():
            if name in _STREAMED:
                dtype = self.dtype if name == "projection" else dtype
                if int(np.prod(shape)) == 0:
                    g.create_dataset(name, data=np.zeros(shape, dtype), track_times=False)
                else:
                    g.create_dataset(
                        name,
                        shape=shape,
                        dtype=dtype,
                        chunks=(1,) + shape[1:],
                        track_times=False,
                        **_COMPRESSION,
                    )
            else:
                g.create_dataset(
                    name,
                    data=np.ascontiguousarray(getattr(head, name), dtype=dtype),
                    track_times=False,
                )
        g.create_dataset("feature", data=head.feature_ids, track_times=False)
        done = 0
        for f0, projection, patch in chunks:
            if f0 != done or projection.shape[1:] != shape[1:] or patch.shape != projection.shape:
                raise ValueError(
                    f"chunk at feature {f0} does not continue layer {head.name} "
                    f"({done} features written, shape {shape})"
                )
            n = projection.shape[0]
            g["projection"][f0 : f0 + n] = np.asarray(projection, dtype=self.dtype)
            g["patch"][f0 : f0 + n] = np.asarray(patch, dtype=np.uint8)
            done += n
        if done != head.features:
            raise ValueError(f"layer {head.name}: {done} of {head.features} features written")
        if head.stats is not None:
            write_statistics(g, head.stats)
        g.attrs["complete"] = True  # last: a layer is complete with its statistics
        self._f.flush()
        return replace(head, projection=g["projection"], patch=g["patch"])


class DamagedPartialError(DeconvvizError):
    """An unfinished report that cannot be continued (cut short by a killed process):
    its layers must be projected again."""


def _is_complete(g) -> bool:
    return bool(attr_value(g.attrs.get("complete", False)))


def finished_layers(f) -> List[str]:
    """The layer groups of an open report file marked complete, in the root's order."""
    return [
        n
        for n in layer_names({k: attr_value(v) for k, v in f.attrs.items()})
        if n in f and _is_complete(f[n])
    ]


def _open_unfinished(path: Path, attrs: dict):
    """An unfinished report opened to append to, after checking it is from this run."""
    h5py = h5py_module()
    try:
        f = h5py.File(path, "r+", track_order=True)
    except OSError:
        raise DamagedPartialError(
            f"the unfinished report {path} is damaged (not a readable HDF5 file)"
        ) from None
    try:
        found = {k: attr_value(v) for k, v in f.attrs.items()}
        if (
            found.get("format") != REPORT_FORMAT
            or "images" not in f
            or not _is_complete(f["images"])
        ):
            raise DamagedPartialError(
                f"the unfinished report {path} is damaged (no complete images group)"
            )
        want = {
            k: attr_value(np.asarray(v) if isinstance(v, (list, tuple)) else v)
            for k, v in attrs.items()
        }
        differ = [k for k in RUN_ATTRS if str(found.get(k)) != str(want.get(k))]
        if differ:
            raise DeconvvizError(
                f"--resume: the unfinished report {path} is from another run "
                f"(its {', '.join(differ)} differ); remove it or run without "
                "--resume"
            )
        done = set(finished_layers(f))
        for name in list(f.keys()):
            if name != "images" and name not in done:
                del f[name]  # a layer cut short by a crash
        return f
    except BaseException:
        f.close()
        raise


def write_report_h5(
    report: Report, path: Union[str, Path], projection_dtype: str = "float32"
) -> Path:
    """Write a whole in-memory ``report`` to ``path`` (see :class:`ReportWriter`)."""
    with ReportWriter(path, report.attrs, projection_dtype) as w:
        if report.images is not None:
            w.add_images(report.images)
        for L in report.layers:
            w.add_layer(report.layers[L])
    return Path(path)


def _windows_of_v1(
    projection: np.ndarray, box: np.ndarray, origin: np.ndarray, rf: Tuple[int, int]
) -> np.ndarray:
    """Version 1 stored whole-image projections ``(F, k, 3, H, W)``: cut them to the
    patch windows ``(F, k, 3, rf_h, rf_w)`` as version 2 stores them."""
    F_, k = projection.shape[:2]
    out = np.zeros((F_, k, projection.shape[2]) + tuple(rf), dtype=projection.dtype)
    for f in range(F_):
        for j in range(k):
            y0, x0, y1, x1 = (int(v) for v in box[f, j])
            if y1 > y0 and x1 > x0:
                oy, ox = y0 - int(origin[f, j, 0]), x0 - int(origin[f, j, 1])
                out[f, j, :, oy : oy + y1 - y0, ox : ox + x1 - x0] = projection[
                    f, j, :, y0:y1, x0:x1
                ]
    return out


def _read_images(f, path: Path) -> Optional[ImageTable]:
    h5py = h5py_module()
    if "images" not in f:
        return None
    g = f["images"]
    for ds in ("index", "pixels", "label", "path"):
        if ds not in g or not isinstance(g[ds], h5py.Dataset):
            raise DeconvvizError(f"report {path} is damaged: images/{ds} missing")
    table = ImageTable(
        index=np.asarray(g["index"][()], np.int64),
        pixels=np.asarray(g["pixels"][()], np.uint8),
        label=np.asarray(g["label"][()], np.int64),
        path=[attr_value(p) for p in g["path"][()]],
    )
    m = table.index.shape[0]
    if table.pixels.shape[:1] != (m,) or table.label.shape != (m,) or len(table.path) != m:
        raise DeconvvizError(f"report {path} is damaged: the images datasets do not fit together")
    return table


def class_names(attrs: dict) -> List[str]:
    """The report's class names (its ``class_names`` JSON attribute), [] if absent."""
    try:
        names = json.loads(attrs.get("class_names", "[]") or "[]")
    except (TypeError, ValueError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def layer_names(attrs: dict) -> List[str]:
    """The layer groups of a report, in order, from its root attributes (``layer2``, or a
    graph node's name); pass one to :func:`read_report_h5` ``layers=`` to read it alone."""
    names = attrs.get("nodes")
    if names is not None:
        return [str(v) for v in (names if isinstance(names, list) else [names])]
    stored = attrs["layers"]
    return [f"layer{int(v)}" for v in (stored if isinstance(stored, list) else [stored])]


def read_report_h5(
    path: Union[str, Path], layers: Optional[Sequence[Union[int, str]]] = None, images: bool = True
) -> Report:
    """Read and check a report written by :class:`ReportWriter` (version 2) or by
    deconvviz 0.1 (version 1). ``layers``: read only these (default: all; ``[]``:
    none); ``images=False`` leaves :attr:`Report.images` None (to read a big
    report one layer at a time without reading its images again each time).

    Raises :class:`~deconvviz.errors.DeconvvizError` (one line) for a missing,
    damaged, foreign or newer-format file, or one whose arrays do not fit together.
    """
    with open_report(path, layers, images, lazy=False) as report:
        return report


@contextlib.contextmanager
def open_report(
    path: Union[str, Path],
    layers: Optional[Sequence[Union[int, str]]] = None,
    images: bool = True,
    lazy: bool = True,
) -> Iterator[Report]:
    """``with open_report(path) as report: ...``: :func:`read_report_h5` with the file
    kept open, each layer's ``projection`` and ``patch`` read one feature at a time
    when indexed (``lazy``; a version-1 file is read whole), so drawing a report of a
    large network (3.5 GB for VGG-16) holds one feature's data, not one layer's.
    The same checks and one-line errors, also for data found damaged while reading."""
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(
                open_checked(path, REPORT_FORMAT, REPORT_VERSION, "report", _ROOT_ATTRS)
            )
            report = _read_report(f, path, layers, images, lazy)
        except DeconvvizError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            # h5py raises these for corrupted objects inside a readable file.
            raise _damaged(path, exc) from None
        yield report  # errors of the caller's block pass through unchanged


def _read_report(f, path, layers, images: bool, lazy: bool) -> Report:
    attrs = {k: attr_value(v) for k, v in f.attrs.items()}
    version = int(attrs["format_version"])
    report = Report(attrs=attrs, images=_read_images(f, Path(path)) if images else None)
    names = layer_names(attrs)
    if layers is not None:
        want = {f"layer{v}" if isinstance(v, int) or str(v).isdigit() else str(v) for v in layers}
        missing = sorted(want - set(names))
        if missing:
            raise DeconvvizError(
                f"report {path} has no layer {missing[0]} (it has {', '.join(names)})"
            )
        names = [n for n in names if n in want]
    H, W = (int(v) for v in attrs.get("image_size", [32, 32]))
    for name in names:
        lr = _read_layer(f, path, name, version, (H, W), lazy and version > 1)
        if version >= 3:
            lr.stats = read_statistics(f[name], path, lr.features, int(attrs.get("num_images", -1)))
        report.layers[lr.key] = lr
    return report


def _damaged(path, exc: BaseException) -> DeconvvizError:
    return DeconvvizError(
        f"report {path} is damaged: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    )


class _Rows:
    """A stored ``(F, ...)`` dataset read one feature (or slice) at a time, as an
    array of ``dtype``; damage found while reading is one line."""

    def __init__(self, ds, dtype, path):
        self._ds, self.dtype, self._path = ds, np.dtype(dtype), path
        self.shape, self.ndim = tuple(ds.shape), len(ds.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        try:
            return np.asarray(self._ds[key], dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise _damaged(self._path, exc) from None

    def __array__(self, dtype=None, copy=None):
        out = self[()]
        return out if dtype is None else out.astype(dtype)


def _read_layer(
    f, path, name: str, version: int, image_size: Tuple[int, int], lazy: bool = False
) -> LayerReport:
    h5py = h5py_module()
    if name not in f or not isinstance(f[name], h5py.Group):
        raise DeconvvizError(f"report {path} is damaged: group {name} missing")
    g = f[name]
    if not _is_complete(g) and "complete" in g.attrs:
        raise DeconvvizError(f"report {path} is damaged: layer {name} was not completely written")
    arrays = {}
    for ds, dtype in _LAYER_DATASETS.items():
        if ds not in g or not isinstance(g[ds], h5py.Dataset):
            raise DeconvvizError(f"report {path} is damaged: {name}/{ds} missing")
        keep = g[ds].dtype if ds == "projection" and g[ds].dtype == np.float16 else dtype
        arrays[ds] = (
            _Rows(g[ds], keep, path)
            if lazy and ds in _STREAMED
            else np.asarray(g[ds][()], dtype=keep)
        )
    F_, k = arrays["activation"].shape if arrays["activation"].ndim == 2 else (-1, -1)
    rf = tuple(int(v) for v in attr_value(g.attrs.get("rf_size", [0, 0])))
    stored_proj = (F_, k, 3) + (tuple(image_size) if version == 1 else rf)
    expect = {
        "activation": (F_, k),
        "image_index": (F_, k),
        "label": (F_, k),
        "position": (F_, k, 2),
        "projection": stored_proj,
        "patch": (F_, k, 3) + rf,
        "patch_box": (F_, k, 4),
        "patch_origin": (F_, k, 2),
    }
    for ds, shape in expect.items():
        if F_ < 0 or arrays[ds].shape != shape:
            raise DeconvvizError(
                f"report {path} is damaged: {name}/{ds} has shape "
                f"{arrays[ds].shape}, expected {shape}"
            )
    feature = None
    if "feature" in g:
        feature = np.asarray(g["feature"][()], dtype=np.int64)
        if feature.shape != (F_,):
            raise DeconvvizError(
                f"report {path} is damaged: {name}/feature has shape "
                f"{feature.shape}, expected {(F_,)}"
            )
    if version == 1:
        arrays["projection"] = _windows_of_v1(
            arrays["projection"], arrays["patch_box"], arrays["patch_origin"], rf
        )
    return LayerReport(
        layer=int(attr_value(g.attrs.get("layer", -1))),
        node=str(attr_value(g.attrs.get("node", ""))),
        path=str(attr_value(g.attrs.get("path", ""))),
        op=str(attr_value(g.attrs.get("op", ""))),
        output_size=tuple(int(v) for v in attr_value(g.attrs["output_size"])),
        rf_size=rf,
        rf_jump=tuple(int(v) for v in attr_value(g.attrs["rf_jump"])),
        rf_start=tuple(int(v) for v in attr_value(g.attrs["rf_start"])),
        feature=feature,
        **arrays,
    )
