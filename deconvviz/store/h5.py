"""One way to stamp and check every deconvviz HDF5 file.

Every file carries root attributes ``format`` (e.g. ``deconvviz-report``),
``format_version`` and ``package_version``, plus the writer's provenance
(checkpoint, data source, command line, ...). :func:`stamp` writes them;
:func:`open_checked` opens a file for reading only after checking that it is
a readable HDF5 file of the expected format and a version this package reads.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import DeconvvizError

__all__ = [
    "STAMPED",
    "h5py_module",
    "attr_value",
    "stamp",
    "open_checked",
    "file_format",
    "write_arrays",
]

STAMPED = ("format", "format_version", "package_version")


def h5py_module():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise DeconvvizError(
            "writing and reading deconvviz files needs h5py (pip install h5py)"
        ) from None
    return h5py


def attr_value(value):
    """An HDF5 attribute as a plain Python value (str, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def stamp(f, fmt: str, version: int, attrs: Optional[Mapping[str, object]] = None) -> None:
    """Write ``format``, ``format_version``, ``package_version`` and then ``attrs``
    (lists and tuples as arrays) as root attributes of the open file ``f``."""
    from .. import __version__

    f.attrs["format"] = fmt
    f.attrs["format_version"] = int(version)
    f.attrs["package_version"] = __version__
    h5py = h5py_module()
    for key, value in (attrs or {}).items():
        if isinstance(value, (list, tuple)):
            strings = bool(value) and all(isinstance(v, str) for v in value)
            value = np.asarray(value, dtype=h5py.string_dtype() if strings else None)
        f.attrs[key] = value


def file_format(path: Union[str, Path]) -> Optional[str]:
    """The ``format`` attribute of a readable HDF5 file, or None (not HDF5, no attribute)."""
    h5py = h5py_module()
    try:
        with h5py.File(path, "r") as f:
            fmt = attr_value(f.attrs.get("format", None))
    except OSError:
        return None
    return fmt if isinstance(fmt, str) else None


@contextlib.contextmanager
def open_checked(
    path: Union[str, Path], fmt: str, version: int, what: str, required: Sequence[str] = ()
) -> Iterator[object]:
    """Open ``path`` for reading after checking it is a ``fmt`` file of version
    1..``version`` with root attributes ``required``; ``what`` names the kind of
    file in the one-line errors ("report", "projection file", ...)."""
    h5py = h5py_module()
    path = Path(path)
    if not path.is_file():
        raise DeconvvizError(f"{what} {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DeconvvizError(
            f"{path} is not a readable HDF5 file (damaged, truncated or not a {what})"
        ) from None
    with f:
        found = attr_value(f.attrs.get("format", None))
        if found != fmt:
            raise DeconvvizError(
                f"{path} is not a deconvviz {what} (format attribute {found!r}, expected {fmt!r})"
            )
        missing = [a for a in required if a not in f.attrs]
        if missing:
            raise DeconvvizError(
                f"{what} {path} is damaged: root attribute(s) {', '.join(missing)} missing"
            )
        try:
            found_version = int(attr_value(f.attrs["format_version"]))
        except (KeyError, TypeError, ValueError):
            raise DeconvvizError(f"{what} {path} is damaged: no format_version") from None
        if found_version > version or found_version < 1:
            raise DeconvvizError(
                f"{what} {path} has format version {found_version}; this "
                f"deconvviz reads versions 1..{version}"
            )
        yield f


def write_arrays(f, datasets: Dict[str, object]) -> None:
    """Write tensors, arrays and lists of strings as datasets of the open file ``f``."""
    h5py = h5py_module()
    for key, value in datasets.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
            value = np.asarray(value, dtype=h5py.string_dtype())
        f.create_dataset(key, data=value)
