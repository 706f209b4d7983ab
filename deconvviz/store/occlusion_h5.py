"""The occlusion maps file: HDF5 layout ``deconvviz-occlusion``."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .h5 import h5py_module, stamp

__all__ = ["OCCLUSION_FORMAT", "OCCLUSION_FORMAT_VERSION", "write_occlusion_h5"]

OCCLUSION_FORMAT = "deconvviz-occlusion"
OCCLUSION_FORMAT_VERSION = 1


def write_occlusion_h5(
    path, maps, images: torch.Tensor, indices: Sequence[int], attrs: Optional[dict] = None
) -> None:
    """Write :class:`~deconvviz.engine.occlusion.OcclusionMaps` and the ``uint8``
    images ``(B, 3, H, W)`` to the HDF5 file ``path`` (straight; callers rename)."""
    h5py = h5py_module()
    with h5py.File(path, "w") as f:
        stamp(f, OCCLUSION_FORMAT, OCCLUSION_FORMAT_VERSION)
        for key in (
            "activation",
            "probability",
            "predicted",
            "feature",
            "label",
            "target",
            "base_activation",
            "base_probability",
            "base_predicted",
            "ys",
            "xs",
            "fill",
        ):
            f.create_dataset(key, data=getattr(maps, key).numpy())
        f.create_dataset("images", data=torch.as_tensor(images).numpy())
        f.create_dataset("index", data=np.asarray(list(indices), dtype=np.int64))
        f.attrs["layer"] = maps.layer
        f.attrs["size"] = maps.size
        f.attrs["stride"] = maps.stride
        f.attrs["fill_name"] = maps.fill_name
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
