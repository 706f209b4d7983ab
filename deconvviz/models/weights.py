"""Weights for a network: state-dict files read with ``weights_only=True``,
torchvision's download cache, and loading that says in one line what does not fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import DeconvvizError
from .torchfile import TorchFileError, read_torch_file

__all__ = [
    "read_state_file",
    "load_state",
    "class_count_to_fit",
    "state_sha256",
    "torchvision_state_dict",
]

#: What ``--weights FILE`` must be, for messages.
STATE_DICT = "a state dict (parameter names to tensors, saved with torch.save)"
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def read_state_file(path: Path) -> dict:
    """A state dict from a file, loaded with ``weights_only=True``. A ``{"state_dict": ...}``
    (or ``model_state_dict``/``model``) wrapper is opened and a DataParallel ``module.``
    prefix removed; anything else that is not a dict of tensors is a one-line error."""
    obj = read_torch_file(path, STATE_DICT)
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict) and _is_tensor_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        held = (
            ("an empty dict" if not obj else "a dict whose values are not all tensors")
            if isinstance(obj, dict)
            else f"a {type(obj).__name__}"
        )
        raise DeconvvizError(f"{path} is not {STATE_DICT}: it holds {held}")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _is_tensor_dict(obj: dict) -> bool:
    return bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _shape_mismatches(model: nn.Module, state: dict):
    own = model.state_dict()
    return [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]


def class_count_to_fit(model: nn.Module, state: dict) -> Optional[int]:
    """The class count of a file whose only differences are the classifier's rows."""
    bad = _shape_mismatches(model, _renamed(state, model))
    if not bad:
        return None
    counts = {f[0] for _, f, _ in bad}
    if (
        len(counts) == 1
        and all(f[1:] == m[1:] for _, f, m in bad)
        and len({m[0] for _, _, m in bad}) == 1
    ):
        return counts.pop()
    return None


def _renamed(state: dict, model: nn.Module) -> dict:
    # DenseNet files from before PyTorch forbade '.' in module names ('norm.1' -> 'norm1').
    if any(_DENSENET_OLD_KEY.match(k) for k in state):
        out = {}
        for k, v in state.items():
            m = _DENSENET_OLD_KEY.match(k)
            out[m.group(1) + m.group(2) if m else k] = v
        return out
    return state


def _keys(keys: Sequence[str], n: int = 3) -> str:
    keys = list(keys)
    more = ", ..." if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state(model: nn.Module, state: dict, arch: str, what: str) -> None:
    """Load ``state`` into ``model`` strictly. Any difference (missing or unexpected keys,
    tensors of another shape) raises one line naming ``what`` (the file), ``arch`` and up
    to three keys of each kind; batch norm's ``num_batches_tracked`` may be absent."""
    state = _renamed(state, model)
    shapes = _shape_mismatches(model, state)
    missing, unexpected = [], []
    if not shapes:
        result = model.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    else:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
    if not (shapes or missing or unexpected):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_keys(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_keys(unexpected)})")
    if shapes:
        shown = ", ".join(
            f"{k}: file {'x'.join(map(str, f))}, model {'x'.join(map(str, m))}"
            for k, f, m in shapes[:3]
        )
        parts.append(
            f"{len(shapes)} of another shape ({shown}{', ...' if len(shapes) > 3 else ''})"
        )
    raise DeconvvizError(f"{what} does not fit {arch}: {'; '.join(parts)}")


def state_sha256(model: nn.Module) -> str:
    """sha256 of the parameters and buffers (names, shapes, bytes): identifies random weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def torchvision_state_dict(arch: str, tv_weights, progress: bool):
    """``(state dict, cached file)`` of torchvision weights, through torchvision's cache
    (``torch.hub.get_dir()/checkpoints``); a failed download names the URL and that path."""
    url = tv_weights.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    existed = cached.is_file()
    try:
        # torch.hub announces downloads on stdout, which belongs to the command's output;
        # its progress bar (stderr) says enough
        with contextlib.redirect_stdout(io.StringIO()):
            state = tv_weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as exc:
        reason = _first_line(exc)
        if existed or cached.is_file():
            try:  # say what the file is in our words: torch's advise loading it unsafely
                read_torch_file(cached, "torchvision's weights")
            except TorchFileError as bad:
                reason = bad.why
            raise DeconvvizError(
                f"cannot read torchvision's cached weights {cached} for {arch} "
                f"({reason}); delete it, or fetch {url} again and save it "
                "there"
            ) from None
        raise DeconvvizError(
            f"cannot download the weights of {arch} ({reason}); fetch {url} and save it as {cached}"
        ) from None
    return state, cached
