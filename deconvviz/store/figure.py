"""The numbers behind a research figure: HDF5 layout ``deconvviz-figure``."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from .atomic import atomic_path
from .h5 import h5py_module, stamp, write_arrays

__all__ = ["FIGURE_FORMAT", "FIGURE_FORMAT_VERSION", "write_h5"]

FIGURE_FORMAT = "deconvviz-figure"
FIGURE_FORMAT_VERSION = 1


def write_h5(path, datasets: Dict[str, object], attrs: Optional[Dict[str, object]] = None) -> Path:
    """Write arrays (tensors, numpy arrays, lists of strings) and attributes to HDF5
    atomically, stamped as a ``deconvviz-figure`` file."""
    h5py = h5py_module()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            stamp(f, FIGURE_FORMAT, FIGURE_FORMAT_VERSION)
            write_arrays(f, datasets)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return Path(path)
