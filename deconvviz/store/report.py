"""The report file: HDF5 layout ``deconvviz-report`` (see the README's file layouts).

A :class:`Report` is root metadata plus one :class:`LayerReport` per layer; this
module writes and reads it, checking format, version and array shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from ..errors import DeconvvizError
from .h5 import STAMPED, attr_value, h5py_module, open_checked, stamp

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "REPORT_FILE", "LayerReport", "Report",
           "write_report_h5", "read_report_h5"]

REPORT_FORMAT = "deconvviz-report"
REPORT_VERSION = 1
REPORT_FILE = "report.h5"

_LAYER_DATASETS = {
    "activation": np.float32, "image_index": np.int64, "position": np.int64,
    "projection": np.float32, "patch": np.uint8, "patch_box": np.int64,
    "patch_origin": np.int64, "label": np.int64,
}


_ROOT_ATTRS = ("format", "format_version", "package_version", "checkpoint_sha256",
               "data_source", "split", "num_images", "command_line", "top_k", "layers")


@dataclass
class LayerReport:
    """Everything the report holds for one layer (``F`` features, ``k`` kept images each).

    ``activation (F, k)`` float32 descending; ``image_index (F, k)`` int64;
    ``label (F, k)`` int64 (-1 where unknown); ``position (F, k, 2)`` int64;
    ``projection (F, k, 3, H, W)`` float32 raw and signed; ``patch
    (F, k, 3, rf_h, rf_w)`` uint8; ``patch_box (F, k, 4)`` int64 (y0, x0, y1, x1);
    ``patch_origin (F, k, 2)`` int64 (see :func:`extract_patches`).
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
    projection: np.ndarray
    patch: np.ndarray
    patch_box: np.ndarray
    patch_origin: np.ndarray

    @property
    def features(self) -> int:
        return int(self.activation.shape[0])

    @property
    def k(self) -> int:
        return int(self.activation.shape[1])


@dataclass
class Report:
    """A whole report: root metadata ``attrs`` and a :class:`LayerReport` per layer."""

    attrs: dict
    layers: Dict[int, LayerReport] = field(default_factory=dict)


def write_report_h5(report: Report, path: Union[str, Path]) -> Path:
    """Write ``report`` to ``path`` as HDF5 (layout: ``docs/report.md``).

    Writes straight to ``path``; callers that must not leave half-written files
    write to a temporary path and rename (see :func:`save_report`).
    """
    h5py = h5py_module()
    with h5py.File(path, "w", track_order=True) as f:
        stamp(f, REPORT_FORMAT, REPORT_VERSION,
              {k: v for k, v in report.attrs.items() if k not in STAMPED})
        for L in sorted(report.layers):
            lr = report.layers[L]
            g = f.create_group(f"layer{L}")
            g.attrs["layer"] = lr.layer
            g.attrs["path"] = lr.path
            g.attrs["features"] = lr.features
            g.attrs["k"] = lr.k
            for name in ("output_size", "rf_size", "rf_jump", "rf_start"):
                g.attrs[name] = np.asarray(getattr(lr, name), dtype=np.int64)
            for name, dtype in _LAYER_DATASETS.items():
                data = np.ascontiguousarray(getattr(lr, name), dtype=dtype)
                # No timestamps, so the same report gives the same bytes.
                g.create_dataset(name, data=data, track_times=False)
    return Path(path)


def read_report_h5(path: Union[str, Path]) -> Report:
    """Read and check a report written by :func:`write_report_h5`.

    Raises :class:`~deconvviz.errors.DeconvvizError` (one line) for a missing,
    damaged, foreign or newer-format file, or one whose arrays do not fit together.
    """
    h5py = h5py_module()
    try:
        with open_checked(path, REPORT_FORMAT, REPORT_VERSION, "report", _ROOT_ATTRS) as f:
            attrs = {k: attr_value(v) for k, v in f.attrs.items()}
            report = Report(attrs=attrs)
            layers = attrs["layers"]
            layers = [int(v) for v in (layers if isinstance(layers, list) else [layers])]
            H, W = (int(v) for v in attrs.get("image_size", [32, 32]))
            for L in layers:
                name = f"layer{L}"
                if name not in f or not isinstance(f[name], h5py.Group):
                    raise DeconvvizError(f"report {path} is damaged: group {name} missing")
                g = f[name]
                arrays = {}
                for ds, dtype in _LAYER_DATASETS.items():
                    if ds not in g or not isinstance(g[ds], h5py.Dataset):
                        raise DeconvvizError(f"report {path} is damaged: {name}/{ds} missing")
                    arrays[ds] = np.asarray(g[ds][()], dtype=dtype)
                F_, k = arrays["activation"].shape if arrays["activation"].ndim == 2 else (-1, -1)
                rf = tuple(int(v) for v in attr_value(g.attrs.get("rf_size", [0, 0])))
                expect = {"activation": (F_, k), "image_index": (F_, k), "label": (F_, k),
                          "position": (F_, k, 2), "projection": (F_, k, 3, H, W),
                          "patch": (F_, k, 3) + rf, "patch_box": (F_, k, 4),
                          "patch_origin": (F_, k, 2)}
                for ds, shape in expect.items():
                    if F_ < 0 or arrays[ds].shape != shape:
                        raise DeconvvizError(f"report {path} is damaged: {name}/{ds} has shape "
                                             f"{arrays[ds].shape}, expected {shape}")
                report.layers[L] = LayerReport(
                    layer=L, path=str(attr_value(g.attrs.get("path", ""))),
                    output_size=tuple(int(v) for v in attr_value(g.attrs["output_size"])),
                    rf_size=rf,
                    rf_jump=tuple(int(v) for v in attr_value(g.attrs["rf_jump"])),
                    rf_start=tuple(int(v) for v in attr_value(g.attrs["rf_start"])),
                    **arrays)
    except DeconvvizError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        # h5py raises these for corrupted objects inside a readable file.
        raise DeconvvizError(f"report {path} is damaged: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return report

