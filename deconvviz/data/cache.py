"""The decode cache: a folder's images decoded once, as the model sees them, into one
``uint8`` array file (``.npy``, ``(N, 3, H, W)``) with its metadata beside it (``.json``),
read back in batches without decoding again (see :class:`.source.ImageSource`).

A cache is named by the preprocessing and every file's absolute path, size, modification
time and label (:func:`cache_key`), so a changed, added, removed or relabelled file makes
another cache; :func:`cache_dir` says where they live.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from ..progress import Progress
from .preprocess import DRAFT_GAP

__all__ = ["cache_dir", "cache_key", "decode_to_cache", "cached_meta"]

# 2: images of another size are resized (shorter side) and centre-cropped, JPEGs drafted
_CACHE_VERSION = 3  # 3: transparent pixels composited on mid-grey


def cache_dir() -> Path:
    """Folder for decoded-image caches: ``$DECONVVIZ_CACHE`` or ``~/.cache/deconvviz``."""
    env = os.environ.get("DECONVVIZ_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deconvviz"


def cache_key(
    paths: Sequence[str],
    labels: Sequence[int],
    size: Tuple[int, int],
    resize_size: int,
    interpolation: str,
) -> str:
    """The decode cache's name: the preprocessing, and every file's absolute path, size,
    modification time (ns) and label, so a changed, added, removed or relabelled file
    makes another cache."""
    h = hashlib.sha256(
        f"v{_CACHE_VERSION}:{size[0]}x{size[1]}:{resize_size}:{interpolation}:"
        f"draft{DRAFT_GAP}".encode()
    )
    # Per folder (the files come folder by folder): its absolute path once (abspath(p) is
    # it joined with the file name) and the files stat'ed relative to it, opened (a
    # one-name lookup each): CIFAR-10's 50,000 files in a quarter less time than by path,
    # and no getcwd per file.
    # (the folder and name split and joined by hand: os.path's checks cost a quarter of the
    # time over 50,000 files; the same strings)
    lines = []
    stat, sep = os.stat, os.sep
    head = fd = prefix = None
    try:
        for p, lab in zip(paths, labels):
            cut = p.rfind(sep) + 1
            h_, tail = p[:cut], p[cut:]
            if h_ != head:
                if fd is not None:
                    os.close(fd)
                    fd = None
                head, folder = h_, os.path.abspath(h_ or ".")
                prefix = folder if folder.endswith(sep) else folder + sep
                fd = os.open(head or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                st = stat(tail, dir_fd=fd)
            except OSError as exc:  # named by its whole path, as a stat by path would
                raise OSError(exc.errno, exc.strerror, p) from None
            lines.append(f"{prefix}{tail}\0{st.st_size}\0{st.st_mtime_ns}\0{lab}\n")
    finally:
        if fd is not None:
            os.close(fd)
    h.update("".join(lines).encode())
    return h.hexdigest()[:32]


def decode_to_cache(
    decoded: Iterable, shape: Tuple[int, ...], target: Path, progress: bool
) -> dict:
    """Decoded images into ``target`` (``.npy``, uint8 ``shape``), written atomically:
    ``decoded`` yields ``(pixels, info, error)`` per image in order (see
    :func:`.decode.decode_files`). An unreadable file is stored as zeros and listed in the
    returned ``"unreadable"`` (index, message)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".decode-", suffix=".npy", dir=str(target.parent))
    stats = {"converted": 0, "resized": 0, "upscaled": 0, "transparent": 0}
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": shape}
            )
            chunk = []
            total = shape[0]
            with Progress(total, "decoding images (once)", enabled=progress, delay=2.0) as bar:
                unreadable = []
                for i, (pixels, info, error) in enumerate(decoded):
                    if error is not None:
                        unreadable.append([i, error])
                        pixels = np.zeros(shape[1:], dtype=np.uint8)
                    else:
                        for key in stats:
                            stats[key] += int(info[key])
                    chunk.append(pixels)
                    if len(chunk) == 2048 or i == total - 1:
                        block = np.ascontiguousarray(np.stack(chunk))
                        f.write(block.tobytes())
                        h.update(block.tobytes())
                        chunk = []
                    bar.update(1)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    stats["pixels_sha256"] = h.hexdigest()
    stats["unreadable"] = unreadable
    return stats


def cached_meta(key: str) -> Optional[dict]:
    """The metadata of the decode cache ``key`` if its array and metadata are there."""
    target, meta_file = cache_dir() / f"{key}.npy", cache_dir() / f"{key}.json"
    if not (target.is_file() and meta_file.is_file()):
        return None
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
