"""Checkpoints: the state dict plus the metadata every command needs.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with
``torch.load(..., weights_only=True)``, so loading never runs pickled code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .. import __version__
from ..errors import DeconvvizError
from ..models.architectures import ARCHITECTURES, build_model
from .torchfile import read_torch_file

__all__ = [
    "save_checkpoint",
    "read_checkpoint",
    "load_model",
    "bundled_checkpoint",
    "file_sha256",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "deconvviz-checkpoint"
CHECKPOINT_VERSION = 1
#: What ``--model FILE`` must be, for messages.
EXPECTED = "a deconvviz checkpoint (written by 'deconvviz train')"
_REQUIRED = (
    "format",
    "format_version",
    "arch",
    "config",
    "state_dict",
    "class_names",
    "normalization",
)


def bundled_checkpoint() -> Path:
    """Path of the trained CIFAR-10 network that ships inside the package."""
    return Path(str(resources.files("deconvviz.models") / "_bundled" / "cifar_cnn.pt"))


def file_sha256(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    path: Union[str, Path],
    model: nn.Module,
    *,
    arch: str,
    config: dict,
    class_names,
    mean,
    std,
    **metadata,
) -> Path:
    """Write a checkpoint atomically (temp file in the target folder, then rename).

    ``metadata`` (epochs, accuracies, training data fingerprint, ...) is stored as is;
    it must hold only plain Python values so ``weights_only`` loading accepts it.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "package_version": __version__,
        "arch": arch,
        "config": dict(config),
        "class_names": list(class_names),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        **metadata,
    }
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DeconvvizError(f"cannot write checkpoint {path}: folder {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(parent))
    except OSError as exc:
        raise DeconvvizError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise DeconvvizError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
        raise
    return path


def read_checkpoint(path: Optional[Union[str, Path]] = None) -> dict:
    """Load and check a checkpoint's dict (the bundled one when ``path`` is None)."""
    path = bundled_checkpoint() if path is None else Path(path)
    if not path.exists():
        raise DeconvvizError(f"checkpoint {path} does not exist")
    payload = read_torch_file(path, EXPECTED)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DeconvvizError(f"{path} is not {EXPECTED}: {_holds(payload)}")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise DeconvvizError(f"checkpoint {path} lacks {', '.join(missing)}")
    if int(payload["format_version"]) > CHECKPOINT_VERSION:
        raise DeconvvizError(
            f"checkpoint {path} has format version {payload['format_version']}; "
            f"this deconvviz reads up to {CHECKPOINT_VERSION}"
        )
    payload["path"] = str(path)
    payload["sha256"] = file_sha256(path)
    return payload


def _holds(payload) -> str:
    """What a loadable file that is no checkpoint holds, and where it belongs instead."""
    if (
        isinstance(payload, dict)
        and payload
        and all(isinstance(v, torch.Tensor) for v in payload.values())
    ):
        return (
            "it holds a state dict (tensors by parameter name); give it to --weights "
            "with the --model that builds its network (torchvision:NAME or "
            "package.module:function)"
        )
    if isinstance(payload, dict):
        return "it holds a dict without the checkpoint's format stamp"
    return f"it holds a {type(payload).__name__}"


def load_model(checkpoint: Optional[Union[str, Path]] = None, device: str = "cpu") -> nn.Module:
    """The network of a checkpoint as an ``nn.Module`` in eval mode.

    ``checkpoint=None`` loads the bundled CIFAR-10 network. The checkpoint's
    metadata (architecture, class names, normalisation, accuracy, ...) is kept
    on the module as ``model.meta`` (a dict without the weights).
    """
    payload = read_checkpoint(checkpoint)
    arch = payload["arch"]
    if arch not in ARCHITECTURES:
        raise DeconvvizError(
            f"checkpoint {payload['path']} is for architecture {arch!r}, which "
            f"this deconvviz does not know (known: {', '.join(sorted(ARCHITECTURES))})"
        )
    try:
        model = build_model(arch, **payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        reason = first[1].strip() if len(first) > 1 else (first[0] if first else "")
        raise DeconvvizError(
            f"checkpoint {payload['path']} does not fit architecture {arch!r}: {reason}"
        ) from None
    model.eval()
    model.to(device)
    model.meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model
