"""The projection file of ``deconvviz project``: HDF5 layout ``deconvviz-projection``."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import DeconvvizError
from .h5 import h5py_module, open_checked, stamp

__all__ = [
    "PROJECTION_FORMAT",
    "PROJECTION_FORMAT_VERSION",
    "write_projection_h5",
    "read_projection_h5",
]

PROJECTION_FORMAT = "deconvviz-projection"
PROJECTION_FORMAT_VERSION = 1


def write_projection_h5(
    path: Union[str, Path],
    proj,
    images_uint8: torch.Tensor,
    *,
    image_index: Sequence[int],
    labels: Sequence[int],
    class_names: Sequence[str],
    attrs: Mapping[str, object],
    image_paths: Optional[Sequence[str]] = None,
    boxes: Optional[np.ndarray] = None,
) -> Path:
    """Write one projection run (a :class:`~deconvviz.engine.deconv.deconvnet.Projection` with one
    seed per image, and the input pixels ``uint8 (B, 3, H, W)``) to ``path``.

    Writes straight to ``path``; callers write to a temporary path and rename.
    """
    h5py = h5py_module()
    with h5py.File(path, "w") as f:
        stamp(
            f,
            PROJECTION_FORMAT,
            PROJECTION_FORMAT_VERSION,
            {"layer": proj.layer, "mode": proj.mode, "rule": proj.rule, "unpool": proj.unpool},
        )
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("projection", data=proj.projections.detach().cpu().float().numpy())
        f.create_dataset("image", data=images_uint8.cpu().numpy())
        f.create_dataset("activation", data=proj.activation.float().numpy())
        f.create_dataset("position", data=proj.position.to(torch.int64).numpy())
        f.create_dataset("image_index", data=np.asarray(image_index, dtype=np.int64))
        f.create_dataset("feature", data=proj.feature.to(torch.int64).numpy())
        f.create_dataset("label", data=np.asarray(labels, dtype=np.int64))
        f.create_dataset("class_names", data=np.asarray(list(class_names), dtype="S"))
        if image_paths is not None:
            f.create_dataset("image_path", data=np.asarray(list(image_paths), dtype="S"))
        if boxes is not None:  # the receptive-field box of each projection (y0, x0, y1, x1)
            f.create_dataset("patch_box", data=np.asarray(boxes, dtype=np.int64))
    return Path(path)


def read_projection_h5(path) -> Dict:
    """Read a file written by :func:`write_projection_h5` back into a dict of arrays
    and ``"attrs"``, checking format and version first."""
    with open_checked(path, PROJECTION_FORMAT, PROJECTION_FORMAT_VERSION, "projection file") as f:
        try:
            out = {k: f[k][()] for k in f.keys()}
            out["attrs"] = dict(f.attrs)
        except (OSError, KeyError, ValueError) as exc:
            raise DeconvvizError(
                f"projection file {path} is damaged: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
    return out
