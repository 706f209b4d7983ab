"""The comparison file: HDF5 layout ``deconvviz-compare`` (``deconvviz compare``, issue 20).

Root attributes: the stamp (``format``, ``format_version``, ``package_version``),
``layer`` (the node compared), ``networks`` (each network as given), ``reports``
(each network's report file, relative to the comparison's folder), ``data_source``,
``data_fingerprint``, ``num_images``, ``min_correlation``, ``method`` and
``command_line``. One group ``step{e}`` per pair of consecutive networks ``e`` (a)
and ``e + 1`` (b): ``correlation (Fa, Fb)`` float64, the matched ``a``, ``b`` (int64)
and ``r`` (float64), strongest first, and ``unmatched_a``, ``unmatched_b``. With
``chains (E, F_last)`` int64 and ``chain_correlation (E - 1, F_last)`` float64: every
feature of the last network followed back (-1 / NaN once the chain breaks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from ..errors import DeconvvizError
from .h5 import attr_value, h5py_module, open_checked, stamp

__all__ = [
    "COMPARE_FORMAT",
    "COMPARE_VERSION",
    "COMPARE_FILE",
    "Comparison",
    "write_compare_h5",
    "read_compare_h5",
]

COMPARE_FORMAT = "deconvviz-compare"
COMPARE_VERSION = 1
COMPARE_FILE = "compare.h5"
_STEP = ("correlation", "a", "b", "r", "unmatched_a", "unmatched_b")
_ROOT = ("layer", "networks", "reports", "num_images", "min_correlation")


@dataclass
class Comparison:
    """What :func:`read_compare_h5` returns: ``attrs``, one dict of arrays per step
    (keys as in the module's docstring), ``chains`` and ``chain_correlation``."""

    attrs: dict
    steps: List[Dict[str, np.ndarray]] = field(default_factory=list)
    chains: np.ndarray = None
    chain_correlation: np.ndarray = None


def write_compare_h5(path: Union[str, Path], comparison: Comparison) -> Path:
    """Write ``comparison`` to ``path`` (callers write to a temporary path and rename)."""
    h5py = h5py_module()
    with h5py.File(path, "w", track_order=True) as f:
        stamp(f, COMPARE_FORMAT, COMPARE_VERSION, comparison.attrs)
        for e, step in enumerate(comparison.steps):
            g = f.create_group(f"step{e}", track_order=True)
            g.attrs["a"], g.attrs["b"] = e, e + 1
            for name in _STEP:
                dtype = np.float64 if name in ("correlation", "r") else np.int64
                g.create_dataset(name, data=np.asarray(step[name], dtype=dtype), track_times=False)
        f.create_dataset("chains", data=np.asarray(comparison.chains, np.int64), track_times=False)
        f.create_dataset(
            "chain_correlation",
            data=np.asarray(comparison.chain_correlation, np.float64),
            track_times=False,
        )
    return Path(path)


def read_compare_h5(path: Union[str, Path]) -> Comparison:
    """Read and check a comparison file (one line for a missing, foreign or damaged one)."""
    h5py = h5py_module()
    with open_checked(path, COMPARE_FORMAT, COMPARE_VERSION, "comparison", _ROOT) as f:
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        networks = attrs["networks"] if isinstance(attrs["networks"], list) else [attrs["networks"]]
        out = Comparison(attrs=attrs)
        try:
            for e in range(len(networks) - 1):
                g = f[f"step{e}"]
                out.steps.append({name: np.asarray(g[name][()]) for name in _STEP})
            out.chains = np.asarray(f["chains"][()], np.int64)
            out.chain_correlation = np.asarray(f["chain_correlation"][()], np.float64)
        except (KeyError, OSError, ValueError) as exc:
            raise DeconvvizError(
                f"comparison {path} is damaged: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        if not isinstance(f.get("chains"), h5py.Dataset) or out.chains.shape[0] != len(networks):
            raise DeconvvizError(f"comparison {path} is damaged: chains do not fit the networks")
    return out
