"""Atomic output: write to a temp file beside the target, rename only when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence, Union

from ..errors import DeconvvizError

__all__ = ["atomic_path", "atomic_paths", "check_writable_dir"]


def check_writable_dir(folder: Union[str, Path], create: bool = True) -> Path:
    """Make sure ``folder`` exists (creating it if asked) and is writable."""
    folder = Path(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeconvvizError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise DeconvvizError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise DeconvvizError(f"output folder {folder} is not writable")
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: Union[str, Path]) -> Iterator[Path]:
    """``with atomic_path(out) as tmp: write(tmp)``: ``out`` appears only if the block succeeds.

    On any failure (including Ctrl-C) the temp file is deleted and an existing
    ``out`` is left untouched.
    """
    with atomic_paths([target]) as tmps:
        yield tmps[0]


@contextlib.contextmanager
def atomic_paths(targets: Sequence[Union[str, Path]]) -> Iterator[Sequence[Path]]:
    """Like :func:`atomic_path` for several files: all are renamed into place only
    after every one was written."""
    targets = [Path(t) for t in targets]
    tmps = []
    try:
        for t in targets:
            fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.", suffix=".part", dir=str(t.parent))
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; give them the usual mode
        for tmp, t in zip(tmps, targets):
            os.chmod(tmp, mode)
            try:
                os.replace(tmp, t)
            except OSError as exc:
                raise DeconvvizError(f"cannot write {t}: {exc.strerror or exc}") from None
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()
