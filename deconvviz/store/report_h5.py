"""The report file: HDF5 layout ``deconvviz-report`` (see the README's file layouts).

This module holds the layout and the in-memory form: a :class:`Report` is root
metadata, the kept images (:class:`ImageTable`) and one :class:`LayerReport` per
layer. :mod:`.report_write` writes a file layer by layer, and each layer's projections
and patches in chunks of features, as they are computed (so memory grows with neither
the number of layers nor of features); :mod:`.report_read` reads and checks one.

Version 2 stores each projection cut to its receptive-field window (the same window as
its patch), the kept images themselves, and every layer dataset chunked per feature and
compressed; version 1 files (whole-image projections, no images) are still read, their
projections cut to the same windows on reading. Version 3 adds to each layer its
``feature`` numbers (a report may keep some features of a layer only), its feature
statistics over the whole scan (:mod:`deconvviz.store.statistics_h5`, one row per kept
feature) and a ``complete`` attribute set once the layer is fully written: a report is
first written as ``report.h5.partial`` one finished layer at a time (flushed after
each), a resumed run appends the missing layers, and the file is renamed to
``report.h5`` only when every layer is complete; a reader refuses a layer not marked
complete. Versions 1 and 2 read with ``LayerReport.stats = None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .h5 import attr_value
from .statistics_h5 import FeatureStatistics

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "REPORT_FILE",
    "PROJECTION_DTYPES",
    "LAYER_DATASETS",
    "STREAMED",
    "LayerReport",
    "ImageTable",
    "Report",
    "layer_names",
    "class_names",
    "features_per_chunk",
    "CHUNK_BYTES",
    "SEEDS_PER_CHUNK",
    "is_complete",
    "finished_layers",
]

REPORT_FORMAT = "deconvviz-report"
REPORT_VERSION = 3  # 3: feature numbers, complete marks, per-feature statistics
REPORT_FILE = "report.h5"
PROJECTION_DTYPES = ("float32", "float16")

#: Every layer group's datasets and their stored dtypes (``projection`` may be float16).
LAYER_DATASETS = {
    "activation": np.float32,
    "image_index": np.int64,
    "position": np.int64,
    "projection": np.float32,
    "patch": np.uint8,
    "patch_box": np.int64,
    "patch_origin": np.int64,
    "label": np.int64,
}
STREAMED = ("projection", "patch")

#: Bytes of projections (float32) and patches one chunk of features may hold while a
#: layer is computed and written (see :func:`features_per_chunk`).
CHUNK_BYTES = 256 * 2**20
#: Seeds (features x k) projected together at most, so that progress moves every few
#: seconds on a large network; large enough that each chunk's recorded forward pass
#: is shared by many seeds.
SEEDS_PER_CHUNK = 512

#: Root attributes that must agree before a run appends to an unfinished report.


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
    :class:`~deconvviz.store.statistics_h5.FeatureStatistics` over the whole scan (None
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


def is_complete(g) -> bool:
    """Whether a layer (or the images) group was marked ``complete`` by its writer."""
    return bool(attr_value(g.attrs.get("complete", False)))


def finished_layers(f) -> List[str]:
    """The layer groups of an open report file marked complete, in the root's order."""
    return [
        n
        for n in layer_names({k: attr_value(v) for k, v in f.attrs.items()})
        if n in f and is_complete(f[n])
    ]


def class_names(attrs: dict) -> List[str]:
    """The report's class names (its ``class_names`` JSON attribute), [] if absent."""
    try:
        names = json.loads(attrs.get("class_names", "[]") or "[]")
    except (TypeError, ValueError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def layer_names(attrs: dict) -> List[str]:
    """The layer groups of a report, in order, from its root attributes (``layer2``, or a
    graph node's name); pass one to :func:`~deconvviz.store.report_read.read_report_h5`
    ``layers=`` to read it alone."""
    names = attrs.get("nodes")
    if names is not None:
        return [str(v) for v in (names if isinstance(names, list) else [names])]
    stored = attrs["layers"]
    return [f"layer{int(v)}" for v in (stored if isinstance(stored, list) else [stored])]
