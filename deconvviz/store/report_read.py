"""Reading the report file (layout :mod:`.report_h5`): :func:`read_report_h5` reads and
checks a whole file; :func:`open_report` keeps it open and reads each layer's projections
and patches one feature at a time. Every version is read (version 1's whole-image
projections cut to their windows); damage is one line.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DeconvvizError
from .h5 import attr_value, h5py_module, open_checked
from .report_h5 import (
    LAYER_DATASETS,
    REPORT_FORMAT,
    REPORT_VERSION,
    STREAMED,
    ImageTable,
    LayerReport,
    Report,
    is_complete,
    layer_names,
)
from .statistics_h5 import read_statistics

__all__ = ["read_report_h5", "open_report"]

#: Root attributes every report file has (checked before anything else is read).
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


def read_report_h5(
    path: Union[str, Path], layers: Optional[Sequence[Union[int, str]]] = None, images: bool = True
) -> Report:
    """Read and check a report written by
    :class:`~deconvviz.store.report_write.ReportWriter` (version 2) or by
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
    if not is_complete(g) and "complete" in g.attrs:
        raise DeconvvizError(f"report {path} is damaged: layer {name} was not completely written")
    arrays = {}
    for ds, dtype in LAYER_DATASETS.items():
        if ds not in g or not isinstance(g[ds], h5py.Dataset):
            raise DeconvvizError(f"report {path} is damaged: {name}/{ds} missing")
        keep = g[ds].dtype if ds == "projection" and g[ds].dtype == np.float16 else dtype
        arrays[ds] = (
            _Rows(g[ds], keep, path)
            if lazy and ds in STREAMED
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
