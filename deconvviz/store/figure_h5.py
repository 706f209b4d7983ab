"""The numbers behind a research figure: HDF5 layout ``deconvviz-figure``."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from .atomic import atomic_path, atomic_paths
from .h5 import h5py_module, stamp, write_arrays

__all__ = ["FIGURE_FORMAT", "FIGURE_FORMAT_VERSION", "write_h5", "write_figure_files"]

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


def write_figure_files(
    fig, png, datasets: Dict[str, object], attrs: Optional[Dict[str, object]] = None
) -> List[Path]:
    """Write a matplotlib figure to ``png`` and its numbers to the same path with
    suffix ``.h5`` (a ``deconvviz-figure`` file); both appear only when both are
    complete. Returns ``[png, h5]``."""
    png = Path(png)
    h5 = png.with_suffix(".h5")
    with atomic_paths([png, h5]) as (tmp_png, tmp_h5):
        fig.savefig(tmp_png, format="png")
        write_h5(tmp_h5, datasets, attrs)
    return [png, h5]
