"""torchvision's classifiers by name (``torchvision:NAME``): the weights a user names
(torchvision's own, a local file, or a seeded random initialisation), the preprocessing
that goes with them, and the few models that need building arguments."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import List

import torch
from torch import nn

from ..data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    Preprocessing,
    default_resize_size,
    image_size_pair,
)
from ..errors import DeconvvizError, first_line, notice
from .checkpoint import file_sha256
from .weights import (
    class_count_to_fit,
    load_state,
    read_state_file,
    state_sha256,
    torchvision_state_dict,
)

__all__ = [
    "build_torchvision",
    "torchvision_models",
    "TORCHVISION_PREFIX",
    "RANDOM_INIT_SEED",
    "DEFAULT_IMAGE_SIZE",
]

TORCHVISION_PREFIX = "torchvision:"
#: The seed of every random initialisation (torchvision, timm and user models alike).
RANDOM_INIT_SEED = 0
DEFAULT_IMAGE_SIZE = 224

# torchvision's pretrained GoogLeNet and Inception-v3 take inputs normalised with
# ImageNet statistics and re-normalise them inside; their files hold the auxiliary
# heads, which the pretrained models then drop. Built the same way for every source.
_AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def torchvision_models() -> List[str]:
    """Names of the classification models in ``torchvision.models`` (``torchvision:NAME``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def build_torchvision(name: str, weights, image_size, mean, std, progress: bool):
    """``(model, meta, preprocessing, categories, trained size)`` of ``torchvision:NAME``:
    the weights (a torchvision weights name, a local state-dict file, or None for a seeded
    random initialisation, announced), the preprocessing of those weights (or ImageNet's),
    ``image_size``/``mean``/``std`` applied; what :func:`.zoo.resolve_model` documents."""
    import torchvision.models as tvm

    names = torchvision_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise DeconvvizError(
            f"unknown torchvision model {name!r}{hint} (any of the "
            f"{len(names)} classification models of torchvision.models)"
        )
    enum = tvm.get_model_weights(name)
    default = enum.DEFAULT
    arch = f"{TORCHVISION_PREFIX}{name}"
    tv_weights, weights_file = _weights_choice(arch, enum, weights)

    if tv_weights is not None:
        t = tv_weights.transforms()
        crop = image_size_pair(t.crop_size)
        resize = int(t.resize_size[0])
        interpolation = getattr(t.interpolation, "value", "bilinear")
        base_mean, base_std = t.mean, t.std
        if image_size is not None and image_size_pair(image_size) != crop:
            size = image_size_pair(image_size)
            resize = default_resize_size(size, resize, max(crop))
        else:
            size = crop
    else:
        size = image_size_pair(DEFAULT_IMAGE_SIZE if image_size is None else image_size)
        resize = default_resize_size(size)
        interpolation, base_mean, base_std = "bilinear", IMAGENET_MEAN, IMAGENET_STD
    if interpolation not in INTERPOLATIONS:
        interpolation = "bilinear"
    pre = Preprocessing(
        size=size,
        resize_size=resize,
        interpolation=interpolation,
        mean=base_mean if mean is None else mean,
        std=base_std if std is None else std,
    )

    kwargs = {}
    if name in _AUX_HEADS:
        kwargs.update(
            transform_input=True,
            aux_logits=True,
            init_weights=tv_weights is None and weights_file is None,
        )
    if name.startswith("vit_"):
        kwargs["image_size"] = tv_weights.meta["min_size"][0] if tv_weights else size[0]
    elif name.startswith("maxvit"):
        kwargs["input_size"] = tuple(tv_weights.meta["min_size"]) if tv_weights else size
    if tv_weights is not None:
        kwargs["num_classes"] = len(tv_weights.meta["categories"])

    meta = {"arch": arch, "model": arch}
    if tv_weights is not None:
        state, path = torchvision_state_dict(arch, tv_weights, progress)
        model = _build(name, kwargs)
        load_state(model, state, arch, f"torchvision's weights file {path}")
        meta.update(
            weights=tv_weights.name if hasattr(tv_weights, "name") else str(tv_weights),
            path=str(path),
            sha256=file_sha256(path),
        )
    elif weights_file is not None:
        state = read_state_file(weights_file)
        model = _build(name, kwargs)
        classes = class_count_to_fit(model, state)
        if classes is not None:
            model = _build(name, dict(kwargs, num_classes=classes))
        load_state(model, state, arch, f"weights file {weights_file}")
        meta.update(
            weights=str(weights_file), path=str(weights_file), sha256=file_sha256(weights_file)
        )
    else:
        model = _build(name, kwargs)
        notice(
            f"{arch} has random weights (seed {RANDOM_INIT_SEED}; no --weights given): its "
            "projections show the architecture, not learned features"
        )
        meta.update(
            weights=None, path=arch, sha256=state_sha256(model), random_init_seed=RANDOM_INIT_SEED
        )
    for attr in _AUX_HEADS.get(name, ()):
        setattr(model, attr, None)
    if name in _AUX_HEADS:
        model.aux_logits = False

    categories = (
        list(tv_weights.meta["categories"])
        if tv_weights is not None
        else list(default.meta.get("categories") or [])
    )
    trained = image_size_pair(tv_weights.transforms().crop_size) if tv_weights is not None else None
    return model, meta, pre, categories, trained


def _weights_choice(arch: str, enum, weights):
    """``(torchvision weights or None, local file or None)``."""
    if weights is None or str(weights) == "":
        return None, None
    text = str(weights)
    if os.path.isfile(text):
        return None, Path(text)
    members = dict(enum.__members__)
    key = text.split(".", 1)[1] if text.startswith(enum.__name__ + ".") else text
    for member, value in members.items():
        if member.upper() == key.upper():
            return value, None
    known = ", ".join(members)
    if os.sep in text or "/" in text or os.path.splitext(text)[1]:
        raise DeconvvizError(
            f"weights file {text} does not exist (or give one of {arch}'s "
            f"torchvision weights: {known})"
        )
    raise DeconvvizError(
        f"{arch} has no weights {text!r}; its torchvision weights are {known} "
        "(or give a local state-dict file)"
    )


def _build(name: str, kwargs: dict) -> nn.Module:
    import warnings

    import torchvision.models as tvm

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. "weights of the aux heads not trained"
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            return tvm.get_model(name, weights=None, **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            sized = [kwargs[k] for k in ("image_size", "input_size") if k in kwargs]
            if sized:
                h, w = image_size_pair(sized[0])
                raise DeconvvizError(
                    f"cannot build torchvision:{name} for {h}x{w} images: "
                    f"{first_line(exc).rstrip('.')}; choose another image "
                    "size"
                ) from None
            raise DeconvvizError(f"cannot build torchvision:{name}: {first_line(exc)}") from None
