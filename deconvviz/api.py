"""The small, flat API for notebooks (re-exported by ``deconvviz``)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from .data.sources import ImageDataset, resolve_source
from .models.checkpoint import read_checkpoint

__all__ = ["load_data", "model_normalization"]


def model_normalization(model: Optional[nn.Module] = None):
    """``(mean, std)`` the model expects (the bundled network's when ``model`` is None
    or carries no checkpoint metadata)."""
    meta = getattr(model, "meta", None) if model is not None else None
    if not meta:
        meta = read_checkpoint(None)
    norm = meta["normalization"]
    return list(norm["mean"]), list(norm["std"])


def load_data(source: Optional[str] = None, model: Optional[nn.Module] = None,
              split: Optional[str] = "test", download: bool = False) -> ImageDataset:
    """A torch ``Dataset`` of ``(image (3, H, W), label)`` pairs, preprocessed for ``model``.

    ``source`` is anything ``--data`` accepts (default ``"builtin"``); images are
    normalised with the model's statistics (the bundled network's by default).
    ``dataset.source`` is the underlying :class:`~deconvviz.data.ImageSource`.
    """
    mean, std = model_normalization(model)
    return ImageDataset(resolve_source(source, split=split, download=download), mean, std)
