"""The small, flat API for notebooks (re-exported by ``deconvviz``)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

from torch import nn

from .data.preprocess import Preprocessing
from .data.resolve import resolve_source
from .data.source import ImageDataset
from .models.checkpoint import read_checkpoint
from .models.zoo import resolve_model

__all__ = ["load_model", "load_data", "model_normalization"]


def load_model(
    spec: Optional[str] = None,
    device: str = "cpu",
    *,
    weights: Optional[str] = None,
    image_size: Union[None, int, Sequence[int]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    progress: bool = True,
) -> nn.Module:
    """A network in eval mode with ``model.meta``: whatever ``--model`` takes.

    ``load_model()`` is the bundled CIFAR-10 network, ``load_model("net.pt")`` a
    deconvviz checkpoint, ``load_model("torchvision:resnet18", weights="DEFAULT")``
    a torchvision classifier (``weights``: a torchvision weights name or a local
    state-dict file; none: seeded random weights), ``load_model("timm:efficientnet_b0",
    weights="pretrained")`` a timm model (``pip install 'deconvviz[timm]'``; ``weights``:
    ``"pretrained"`` or a local file), ``load_model("pkg.mod:make")``
    the ``nn.Module`` your function returns. ``image_size``, ``mean`` and ``std``
    override the preprocessing. See :func:`deconvviz.models.zoo.resolve_model`.
    """
    return resolve_model(
        spec,
        weights=weights,
        device=device,
        image_size=image_size,
        mean=mean,
        std=std,
        progress=progress,
    )


def model_normalization(model: Optional[nn.Module] = None) -> Tuple[List[float], List[float]]:
    """``(mean, std)`` the model expects (the bundled network's when ``model`` is None
    or carries no checkpoint metadata)."""
    meta = getattr(model, "meta", None) if model is not None else None
    if not meta:
        meta = read_checkpoint(None)
    norm = meta["normalization"]
    return list(norm["mean"]), list(norm["std"])


def load_data(
    source: Optional[str] = None,
    model: Optional[nn.Module] = None,
    split: Optional[str] = "test",
    download: bool = False,
) -> ImageDataset:
    """A torch ``Dataset`` of ``(image (3, H, W), label)`` pairs, preprocessed for ``model``.

    ``source`` is anything ``--data`` accepts (default ``"builtin"``); image files
    of another size are resized and centre-cropped to the model's input (its
    ``meta``: ``input_size``, ``resize_size``, ``interpolation``) and every image
    is normalised with the model's statistics (the bundled network's by default).
    ``dataset.source`` is the underlying :class:`~deconvviz.data.ImageSource`.
    """
    meta = getattr(model, "meta", None) if model is not None else None
    pre = Preprocessing.from_meta(meta if meta else read_checkpoint(None))
    return ImageDataset(
        resolve_source(source, split=split, download=download, **pre.source_kwargs()),
        pre.mean,
        pre.std,
    )
