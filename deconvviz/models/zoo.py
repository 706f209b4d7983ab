"""Every network ``--model`` names: deconvviz checkpoints, torchvision classifiers,
timm's models (:mod:`.timm_models`; torchvision's are built by :mod:`.torchvision_models`)
and the user's own code, resolved by one function,
:func:`resolve_model`.

Whatever the source, the model comes back in eval mode with ``model.meta``, the
dict every command reads (``path``, ``sha256``, ``arch``, ``class_names``,
``normalization`` ``{mean, std}``, ``input_size`` ``[3, H, W]``) plus, for
torchvision, timm and user models, ``resize_size`` and ``interpolation``, the
preprocessing that :class:`deconvviz.data.preprocess.Preprocessing` reads back.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import __version__
from ..data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    default_resize_size,
    image_size_pair,
)
from ..errors import DeconvvizError, first_line
from .checkpoint import file_sha256, load_model
from .timm_models import TIMM_PREFIX, build_timm, timm_preprocessing
from .torchvision_models import (
    DEFAULT_IMAGE_SIZE,
    RANDOM_INIT_SEED,
    TORCHVISION_PREFIX,
    build_torchvision,
    torchvision_models,
)
from .weights import (
    load_state,
    read_state_file,
    state_sha256,
)

__all__ = [
    "resolve_model",
    "torchvision_models",
    "model_kind",
    "TORCHVISION_PREFIX",
    "RANDOM_INIT_SEED",
]

_MODULE_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

Size = Union[None, int, Sequence[int]]


def model_kind(spec: Optional[str]) -> str:
    """``"checkpoint"`` (None or a path), ``"torchvision"`` (``torchvision:NAME``),
    ``"timm"`` (``timm:NAME``) or ``"module"`` (``package.module:function``, when no
    such file exists)."""
    if spec is None or str(spec) == "":
        return "checkpoint"
    spec = str(spec)
    if spec.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    if spec.startswith(TIMM_PREFIX):
        return "timm"
    if _MODULE_SPEC.match(spec) and not os.path.exists(spec):
        return "module"
    return "checkpoint"


def resolve_model(
    spec: Optional[str] = None,
    weights: Optional[str] = None,
    device: str = "cpu",
    image_size: Size = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    *,
    progress: bool = True,
) -> nn.Module:
    """The network ``--model`` names, in eval mode on ``device``, with ``model.meta``.

    ``spec``:

    * ``None``: the bundled CIFAR-10 network; a path: a deconvviz checkpoint
      (both exactly as :func:`deconvviz.models.checkpoint.load_model`);
    * ``"torchvision:NAME"``: any classification model of ``torchvision.models``
      (:func:`torchvision_models`), e.g. ``torchvision:vgg16_bn``;
    * ``"timm:NAME"``: a model of timm (``pip install 'deconvviz[timm]'``), e.g.
      ``timm:efficientnet_b0`` or with a pretrained tag ``timm:resnet50.a1_in1k``
      (:func:`deconvviz.models.timm_models.build_timm`);
    * ``"package.module:function"``: ``function()`` from the user's code, which
      must return an ``nn.Module`` (the module is imported from ``sys.path`` or
      the current folder; it runs with torch's RNG seeded with 0).

    ``weights`` (torchvision, timm and user models only; for timm, ``"pretrained"``
    or a local file, see :func:`~deconvviz.models.timm_models.build_timm`):

    * a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``, ...): the file
      comes through torchvision's own cache (``torch.hub.get_dir()/checkpoints``,
      downloaded on first use; offline, the error names the URL and that path);
    * a local state-dict file, read with ``torch.load(..., weights_only=True)``
      (a ``{"state_dict": ...}`` wrapper and a DataParallel ``module.`` prefix
      are accepted; a classifier with another class count is rebuilt to fit);
    * ``None``: torchvision models get a random initialisation, seeded with
      :data:`RANDOM_INIT_SEED` and announced by a one-line notice.

    Preprocessing (``meta``): torchvision weights bring their own crop, resize,
    interpolation, mean and std; every other torchvision or user model gets
    ImageNet's (mean 0.485, 0.456, 0.406, std 0.229, 0.224, 0.225, resize 256
    then centre crop 224); timm models get their data config's (input size,
    ``crop_pct``, interpolation, mean, std), with or without weights. ``image_size`` (an
    int or ``(H, W)``) changes the crop and scales the resize in proportion;
    ``mean``/``std`` replace the statistics.
    A checkpoint's input size is fixed (its classifier depends on it); its
    ``mean``/``std`` may be replaced.

    Class names: the weights' categories; otherwise a model with 1000 outputs
    gets the ImageNet categories (output unit ``i`` of every torchvision
    classifier stands for ImageNet class ``i``, also before training), a user
    module may set ``class_names`` on itself, and any other count is named
    ``class0..class{N-1}``. A model whose output is not ``(B, N)`` (a feature
    extractor) has no class names.

    Every mistake (unknown name, weights for another architecture, download
    while offline, import failure, a function that returns no module, an input
    size the network cannot take) raises a one-line :class:`DeconvvizError`.
    """
    kind = model_kind(spec)
    if kind == "checkpoint":
        return _checkpoint(spec, weights, device, image_size, mean, std)
    if kind == "torchvision":
        name = str(spec)[len(TORCHVISION_PREFIX) :]
        model, meta, pre, categories, trained = build_torchvision(
            name, weights, image_size, mean, std, progress
        )
        return _finish(model, meta, pre, device, categories, trained_size=trained)
    if kind == "timm":
        name = str(spec)[len(TIMM_PREFIX) :]
        model, meta = build_timm(name, weights, RANDOM_INIT_SEED, progress)
        pre = timm_preprocessing(name, image_size, mean, std)
        return _finish(model, meta, pre, device, None)
    return _user_module(str(spec), weights, device, image_size, mean, std)


# --------------------------------------------------------------------------- checkpoints


def _checkpoint(spec, weights, device, image_size, mean, std) -> nn.Module:
    if weights is not None:
        raise DeconvvizError(
            "a deconvviz checkpoint carries its own weights; --weights applies "
            "to torchvision:NAME and package.module:function models"
        )
    model = load_model(spec, device=device)
    meta = model.meta
    size = tuple(int(v) for v in meta.get("input_size", (3, 32, 32))[-2:])
    if image_size is not None and image_size_pair(image_size) != size:
        h, w = image_size_pair(image_size)
        raise DeconvvizError(
            f"checkpoint {meta['path']} takes {size[0]}x{size[1]} images; "
            f"it cannot run at {h}x{w} (its classifier is fixed to that size)"
        )
    if mean is not None or std is not None:
        norm = meta["normalization"]
        pre = Preprocessing(
            size=size,
            resize_size=max(size),
            mean=norm["mean"] if mean is None else mean,
            std=norm["std"] if std is None else std,
        )
        meta["normalization"] = {"mean": list(pre.mean), "std": list(pre.std)}
    return model


# --------------------------------------------------------------------------- user code


def _user_module(spec, weights, device, image_size, mean, std) -> nn.Module:
    modname, funcname = spec.split(":")
    module = _import(modname, spec)
    func = getattr(module, funcname, None)
    where = getattr(module, "__file__", None) or modname
    if func is None:
        raise DeconvvizError(f"module {modname} ({where}) has no {funcname!r} (for --model {spec})")
    if not callable(func):
        raise DeconvvizError(
            f"{spec} is a {type(func).__name__}, not a function that returns an nn.Module"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            model = func()
        except Exception as exc:
            raise DeconvvizError(f"{spec} raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise DeconvvizError(
            f"{spec} returned a {type(model).__module__}.{type(model).__name__}"
            ", not a torch.nn.Module"
        )
    size = image_size_pair(DEFAULT_IMAGE_SIZE if image_size is None else image_size)
    _materialize_lazy(model, spec, size)
    meta = {"arch": spec, "model": spec}
    if weights is not None and str(weights) != "":
        if not os.path.isfile(str(weights)):
            raise DeconvvizError(
                f"weights file {weights} does not exist (for a model of your "
                "own, --weights takes a state-dict file; torchvision weights "
                "names apply to torchvision:NAME)"
            )
        state = read_state_file(Path(str(weights)))
        load_state(model, state, spec, f"weights file {weights}")
        meta.update(weights=str(weights), path=str(weights), sha256=file_sha256(weights))
    else:
        meta.update(weights=None, path=spec, sha256=state_sha256(model))
    pre = Preprocessing(
        size=size,
        resize_size=default_resize_size(size),
        mean=IMAGENET_MEAN if mean is None else mean,
        std=IMAGENET_STD if std is None else std,
    )
    own = getattr(model, "class_names", None)
    return _finish(model, meta, pre, device, None, own_classes=own)


def _import(modname: str, spec: str):
    # Console scripts do not put the current folder on sys.path, as `python -m` does.
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(modname)
    except Exception as exc:
        raise DeconvvizError(
            f"cannot import {modname} for --model {spec}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


# --------------------------------------------------------------------------- finishing


def _imagenet_categories() -> List[str]:
    import torchvision.models as tvm

    return list(tvm.ResNet50_Weights.DEFAULT.meta["categories"])


def _finish(
    model: nn.Module,
    meta: dict,
    pre: Preprocessing,
    device: str,
    categories: Optional[List[str]],
    trained_size: Optional[Tuple[int, int]] = None,
    own_classes=None,
) -> nn.Module:
    """Eval mode, on ``device``, one forward pass to check the input size and count
    the outputs, then ``model.meta``."""
    import torchvision

    model.eval()
    model.to(device)
    h, w = pre.size
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        with torch.inference_mode():
            out = model(torch.zeros((1, 3, h, w), dtype=dtype, device=device))
    except Exception as exc:
        hint = (
            f" (its weights were trained at {trained_size[0]}x{trained_size[1]})"
            if trained_size
            else ""
        )
        raise DeconvvizError(
            f"{meta['arch']} does not run on 3x{h}x{w} images{hint}: "
            f"{type(exc).__name__}: {first_line(exc).rstrip('.')}; choose "
            "another image size"
        ) from None
    if isinstance(out, torch.Tensor) and out.dim() == 2:
        n = int(out.shape[1])
        if own_classes is not None and len(list(own_classes)) == n:
            class_names = [str(c) for c in own_classes]
        elif categories and len(categories) == n:
            class_names = list(categories)
        elif categories is None and n == 1000:
            class_names = _imagenet_categories()
        else:
            class_names = [f"class{i}" for i in range(n)]
    else:
        n, class_names = None, []
    meta.update(
        class_names=class_names,
        num_classes=n,
        normalization={"mean": list(pre.mean), "std": list(pre.std)},
        input_size=[3, h, w],
        resize_size=pre.resize_size,
        interpolation=pre.interpolation,
        package_version=__version__,
        torch_version=torch.__version__,
        torchvision_version=torchvision.__version__,
    )
    model.meta = meta
    return model


def _materialize_lazy(model: nn.Module, spec: str, size) -> None:
    """Lazy modules (``nn.LazyLinear``, ...) get their shapes from one forward pass of a grey
    batch of the input size, seeded like the rest of a random initialisation."""
    if not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        return
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 3, *size))
        except Exception as exc:
            raise DeconvvizError(
                f"{spec} has lazy layers, and a {size[0]}x{size[1]} image to "
                f"set their shapes raised {type(exc).__name__}: "
                f"{first_line(exc)} (give --image-size)"
            ) from None
        finally:
            model.train(was_training)
