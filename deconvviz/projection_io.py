"""Choosing images for a feature, and writing one projection run as PNG + HDF5."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np
import torch
from torch import nn

from . import __version__
from .atomic import atomic_paths
from .data import ImageSource
from .deconvnet import Projection
from .errors import DeconvvizError
from .render import image_to_display, pairs_figure, save_figure, to_display

__all__ = ["strongest_images", "save_projection", "read_projection_h5", "PROJECTION_FORMAT",
           "PROJECTION_FORMAT_VERSION"]

PROJECTION_FORMAT = "deconvviz-projection"
PROJECTION_FORMAT_VERSION = 1


def strongest_images(model: nn.Module, source: ImageSource, layer: int, feature: int, k: int,
                     mean, std, batch_size: int = 500, device: str = "cpu"):
    """Indices ``(k,)`` and activations ``(k,)`` of the ``k`` images of ``source`` on which
    ``feature`` of ``layer`` fires most (its maximum over positions), strongest first;
    ties go to the smaller image index. One streaming pass (:func:`report.scan_topk`)."""
    from .report import finalize_topk, scan_topk

    top = scan_topk(model, source, [layer], k, batch_size=batch_size, device=device,
                    mean=mean, std=std)[layer]
    top = finalize_topk(top, len(source))
    return top.image_index[feature], top.activation[feature]


def save_projection(out_dir: Path, stem: str, proj: Projection, images_uint8: torch.Tensor, *,
                    image_index: Sequence[int], labels: Sequence[int],
                    class_names: Sequence[str], attrs: Dict,
                    image_paths: Optional[Sequence[str]] = None) -> List[Path]:
    """Write ``stem.png`` (each image beside its projection, labelled with the
    activation) and ``stem.h5`` (raw values and provenance), both atomically.

    ``images_uint8``: the input pixels ``(B, 3, H, W)``; ``proj``: one seed per image.
    """
    png, h5 = Path(out_dir) / f"{stem}.png", Path(out_dir) / f"{stem}.h5"
    names = []
    for j in range(len(image_index)):
        lab = int(labels[j])
        cls = class_names[lab] if 0 <= lab < len(class_names) else ""
        act = float(proj.activation[j])
        fires = f"act {act:.3g}" if act > 0 else "does not fire"
        names.append(f"#{int(image_index[j])} {cls} {fires}".replace("  ", " "))
    title = (f"layer {proj.layer}, feature {int(proj.feature[0])} "
             f"(mode {proj.mode}, rule {proj.rule}, unpool {proj.unpool})")
    fig = pairs_figure(image_to_display(images_uint8), to_display(proj.projections), names, title,
                       columns=3)
    with atomic_paths([png, h5]) as (tmp_png, tmp_h5):
        save_figure(fig, tmp_png)
        with h5py.File(tmp_h5, "w") as f:
            f.attrs["format"] = PROJECTION_FORMAT
            f.attrs["format_version"] = PROJECTION_FORMAT_VERSION
            f.attrs["package_version"] = __version__
            f.attrs["layer"] = proj.layer
            f.attrs["mode"] = proj.mode
            f.attrs["rule"] = proj.rule
            f.attrs["unpool"] = proj.unpool
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
    return [png, h5]


def read_projection_h5(path) -> Dict:
    """Read a file written by :func:`save_projection` back into a dict of arrays and attributes."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != PROJECTION_FORMAT:
                raise DeconvvizError(f"{path} is not a deconvviz projection file")
            if int(f.attrs["format_version"]) > PROJECTION_FORMAT_VERSION:
                raise DeconvvizError(f"{path} has format version {f.attrs['format_version']}; "
                                     f"this deconvviz reads up to {PROJECTION_FORMAT_VERSION}")
            out = {k: f[k][()] for k in f.keys()}
            out["attrs"] = dict(f.attrs)
    except OSError as exc:
        raise DeconvvizError(f"cannot read {path}: {exc}") from None
    return out
