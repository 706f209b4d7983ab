"""Writing the report file (layout :mod:`.report_h5`): :class:`ReportWriter` writes one
layer at a time, each layer's projections and patches in chunks of features as they are
computed, marks each layer ``complete`` once written, and continues an unfinished file of
the same run; :func:`write_report_h5` writes a whole in-memory :class:`Report`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, List, Tuple, Union

import numpy as np

from ..errors import DeconvvizError
from .h5 import STAMPED, attr_value, h5py_module, stamp
from .report_h5 import (
    LAYER_DATASETS,
    PROJECTION_DTYPES,
    REPORT_FORMAT,
    REPORT_VERSION,
    STREAMED,
    ImageTable,
    LayerReport,
    Report,
    features_per_chunk,
    finished_layers,
    is_complete,
)
from .statistics_h5 import write_statistics

__all__ = ["ReportWriter", "write_report_h5", "RUN_ATTRS", "DamagedPartialError"]

_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}

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
        for name, dtype in LAYER_DATASETS.items():
            if name in STREAMED:
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
            or not is_complete(f["images"])
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
