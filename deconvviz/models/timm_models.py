"""``timm:NAME``: the models of timm (pytorch-image-models) by name, an optional extra.

:func:`build_timm` makes the network with seeded random weights, weights from a
local file, or timm's pretrained weights; :func:`timm_preprocessing` reads the
crop, resize, interpolation, mean and std from timm's data config of that model;
:func:`fx_leaf_modules` names the timm modules that torch.fx must keep whole.
``pip install 'deconvviz[timm]'`` installs timm; without it, ``timm:`` says so in
one line.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import socket
import sys
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import urlparse

import torch
from torch import nn

from ..data.preprocess import INTERPOLATIONS, Preprocessing, default_resize_size, image_size_pair
from ..errors import DeconvvizError, first_line, notice
from .checkpoint import file_sha256
from .weights import class_count_to_fit, load_state, read_state_file, state_sha256

__all__ = [
    "TIMM_PREFIX",
    "PRETRAINED",
    "import_timm",
    "timm_models",
    "check_timm_name",
    "timm_preprocessing",
    "build_timm",
    "pretrained_file",
    "fx_leaf_modules",
]

TIMM_PREFIX = "timm:"
#: ``--weights pretrained``: timm's own weights for the model (and its tag).
PRETRAINED = "pretrained"
_INSTALL = "pip install 'deconvviz[timm]' (or pip install timm)"
_HUB = "huggingface.co"


def import_timm():
    """The ``timm`` module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise DeconvvizError(
            f"timm:NAME models need the timm package, which is not installed: {_INSTALL}"
        ) from None
    return timm


def timm_models() -> List[str]:
    """Names of timm's architectures (``timm:NAME``; a pretrained tag may follow:
    ``timm:resnet50.a1_in1k``)."""
    return sorted(import_timm().list_models())


def check_timm_name(name: str) -> Tuple[str, Optional[str]]:
    """``(architecture, tag or None)`` of ``name``; an unknown architecture or tag is a
    one-line error with the closest names."""
    timm = import_timm()
    arch, _, tag = name.partition(".")
    names = timm.list_models()
    if arch not in set(names):
        close = difflib.get_close_matches(arch, names, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise DeconvvizError(
            f"unknown timm model {arch!r}{hint} (any of the {len(names)} "
            "architectures of timm.list_models())"
        )
    if tag:
        tags = [p.partition(".")[2] for p in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            known = ", ".join(tags) if tags else "none"
            raise DeconvvizError(
                f"timm model {arch} has no pretrained tag {tag!r}; its tags: {known}"
            )
    return arch, tag or None


def _pretrained_cfg(name: str) -> dict:
    cfg = import_timm().models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def timm_preprocessing(name: str, image_size=None, mean=None, std=None) -> Preprocessing:
    """What timm's data config of ``name`` asks of the pixels: its input size, its
    ``crop_pct`` (resize the shorter side to ``floor(size / crop_pct)``, then centre
    crop), interpolation, mean and std. ``image_size`` changes the crop and scales the
    resize in proportion; ``mean``/``std`` replace the statistics."""
    cfg = _pretrained_cfg(name)
    crop = image_size_pair(tuple(cfg.get("input_size") or (3, 224, 224))[-2:])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    resize = max(int(math.floor(max(crop) / crop_pct)), max(crop))
    if cfg.get("crop_mode", "center") != "center":
        notice(
            f"timm:{name} is evaluated with crop mode {cfg['crop_mode']!r}; deconvviz "
            "resizes the shorter side and centre-crops"
        )
    size = crop
    if image_size is not None and image_size_pair(image_size) != crop:
        size = image_size_pair(image_size)
        resize = default_resize_size(size, resize, max(crop))
    interpolation = str(cfg.get("interpolation") or "bilinear")
    if interpolation not in INTERPOLATIONS:
        interpolation = "bilinear"
    return Preprocessing(
        size=size,
        resize_size=resize,
        interpolation=interpolation,
        mean=cfg.get("mean") or (0.485, 0.456, 0.406) if mean is None else mean,
        std=cfg.get("std") or (0.229, 0.224, 0.225) if std is None else std,
    )


def pretrained_file(name: str) -> Tuple[Path, str]:
    """``(local path, URL)`` of timm's pretrained weights of ``name``: deconvviz reads the
    file at the path when it is there (save a download there by hand when offline)."""
    cfg = _pretrained_cfg(name)
    full = f"{cfg.get('architecture', name)}.{cfg['tag']}" if cfg.get("tag") else name
    folder = Path(torch.hub.get_dir()) / "checkpoints" / "timm"
    if cfg.get("hf_hub_id"):
        repo = str(cfg["hf_hub_id"]).split("@")[0]
        return (
            folder / f"{full}.safetensors",
            f"https://huggingface.co/{repo}/resolve/main/model.safetensors",
        )
    url = str(cfg.get("url") or "")
    suffix = "".join(Path(urlparse(url).path).suffixes[-1:]) or ".pth"
    return folder / f"{full}{suffix}", url


def read_weights_file(path: Path) -> dict:
    """A state dict from a local file: ``.safetensors``, a state-dict file, or a timm
    training checkpoint (``{"state_dict": ..., "args": Namespace}``), all read without
    unpickling code (``weights_only=True``; argparse's plain Namespace is allowed)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise DeconvvizError(
                f"cannot read weights file {path} as safetensors: {first_line(exc)}"
            ) from None
    with torch.serialization.safe_globals([argparse.Namespace]):
        return read_state_file(path)


def _create(timm, name: str, seed: int, **kwargs) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return timm.create_model(name, **kwargs)
        except (TypeError, ValueError, RuntimeError, AssertionError, KeyError) as exc:
            raise DeconvvizError(f"cannot build timm:{name}: {first_line(exc)}") from None


def _hub_reachable(url: str) -> bool:
    # huggingface_hub retries an unreachable host for about a minute before it gives up;
    # a name that does not resolve (and no proxy to ask) will not come back in that time.
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or url).hostname or _HUB
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _cached_hub_file(cfg: dict) -> Optional[Path]:
    """timm's weights already in the Hugging Face cache (a download of an earlier run)."""
    if not cfg.get("hf_hub_id"):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo = str(cfg["hf_hub_id"]).split("@")[0]
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _pretrained(timm, name: str, seed: int, progress: bool) -> Tuple[nn.Module, Path]:
    cfg = _pretrained_cfg(name)
    if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        tags = [p.partition(".")[2] for p in timm.list_pretrained(f"{name.split('.')[0]}.*")]
        raise DeconvvizError(
            f"timm has no pretrained weights for timm:{name}"
            + (f"; its pretrained tags: {', '.join(tags)}" if tags else "")
        )
    local, url = pretrained_file(name)
    found = local if local.is_file() else _cached_hub_file(cfg)
    if found is not None:
        # timm reads a .safetensors file with safetensors and any other with weights_only=True
        try:
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(found), "source": ""}
            )
        except Exception as exc:  # safetensors, torch.load and load_state_dict raise their own
            raise DeconvvizError(
                f"cannot read timm's weights {found} for timm:{name} "
                f"({first_line(exc)}); delete it, or fetch {url} again and "
                "save it there"
            ) from None
        return model, found
    fail = f"fetch {url} and save it as {local} (or pass the file as --weights)"
    if not _hub_reachable(url):
        raise DeconvvizError(
            f"cannot download the weights of timm:{name} ({urlparse(url).hostname}"
            f" cannot be reached); {fail}"
        )
    try:
        timm.models._builder.set_pretrained_download_progress(progress)
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise DeconvvizError(
            f"cannot download the weights of timm:{name} ({first_line(exc)}); {fail}"
        ) from None
    return model, _cached_hub_file(cfg) or local


def build_timm(
    name: str, weights: Optional[str], seed: int, progress: bool = True
) -> Tuple[nn.Module, dict]:
    """``(model, meta)`` for ``timm:NAME``: ``weights`` is ``None`` (random weights
    seeded with ``seed``, announced by a notice), ``"pretrained"`` (timm's weights:
    a local copy where deconvviz looks for one (:func:`pretrained_file`), timm's
    Hugging Face cache, or a download; offline, one line names the URL and that
    path) or a local file (:func:`read_weights_file`; a classifier with another
    class count is rebuilt to fit; keys that do not fit are named in one line)."""
    timm = import_timm()
    arch, _ = check_timm_name(name)
    spec = f"{TIMM_PREFIX}{name}"
    meta = {"arch": spec, "model": spec, "timm_version": timm.__version__}
    text = "" if weights is None else str(weights)
    if text.lower() == PRETRAINED:
        model, path = _pretrained(timm, name, seed, progress)
        meta.update(
            weights=PRETRAINED,
            path=str(path),
            sha256=file_sha256(path) if Path(path).is_file() else state_sha256(model),
        )
    elif text:
        path = Path(text)
        if not path.is_file():
            raise DeconvvizError(
                f"weights file {text} does not exist (for {spec}, --weights takes "
                f"a state-dict, timm checkpoint or .safetensors file, or "
                f"'{PRETRAINED}')"
            )
        state = read_weights_file(path)
        model = _create(timm, name, seed)
        classes = class_count_to_fit(model, state)
        if classes is not None:
            model = _create(timm, name, seed, num_classes=classes)
        load_state(model, state, spec, f"weights file {text}")
        meta.update(weights=text, path=text, sha256=file_sha256(path))
    else:
        model = _create(timm, name, seed)
        notice(
            f"{spec} has random weights (seed {seed}; no --weights given): its projections "
            "show the architecture, not learned features"
        )
        meta.update(weights=None, path=spec, sha256=state_sha256(model), random_init_seed=seed)
    return model, meta


def fx_leaf_modules(model: nn.Module) -> Tuple[type, ...]:
    """The module classes of ``model`` that torch.fx must keep whole: timm's registered
    "no trace" classes (``timm.layers.register_notrace_module``) that cannot be traced on
    their own (``Conv2dSame``'s padding depends on the input size). Empty for a model
    without timm modules or when timm is not imported.

    Every other module is traced through, so that each step (a batch norm, then its
    activation, inside timm's ``BatchNormAct2d``) is a node of its own.
    """
    if "timm" not in sys.modules:
        return ()
    try:
        from timm.layers import get_notrace_modules
    except ImportError:
        return ()
    from torch import fx

    notrace = set(get_notrace_modules())
    found = {}
    for m in model.modules():
        if type(m) in notrace:
            found.setdefault(type(m), m)
    leaves = []
    for cls, m in found.items():
        try:
            fx.Tracer().trace(m)
        except Exception:  # torch.fx raises TraceError, TypeError, ... on Python it cannot follow
            leaves.append(cls)
    return tuple(sorted(leaves, key=lambda c: f"{c.__module__}.{c.__qualname__}"))
