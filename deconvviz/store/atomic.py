"""Atomic output: write to a temp file beside the target, rename only when complete."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

from ..errors import DeconvvizError

__all__ = [
    "atomic_path",
    "atomic_paths",
    "atomic_folder",
    "check_folder_target",
    "check_writable_dir",
]


def check_writable_dir(folder: Union[str, Path], create: bool = True) -> Path:
    """Make sure ``folder`` exists (creating it if asked) and is writable."""
    folder = Path(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeconvvizError(
            f"cannot create output folder {folder}: {exc.strerror or exc}"
        ) from None
    if not folder.is_dir():
        raise DeconvvizError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise DeconvvizError(f"output folder {folder} is not writable")
    return folder


@contextlib.contextmanager
def output_folder(folder: Union[str, Path]) -> Iterator[Path]:
    """``with output_folder(out) as out: ...``: ``out`` is created and checked as
    :func:`check_writable_dir` does; if the block fails, the folders this call
    created are removed again where they are still empty, so a run refused for bad
    input leaves nothing behind (an existing folder is never touched)."""
    folder = Path(folder)
    first_new, p = None, folder.absolute()
    while not p.exists() and p != p.parent:
        first_new, p = p, p.parent
    out = check_writable_dir(folder)
    try:
        yield out
    except BaseException:
        if first_new is not None:
            _remove_empty_folders(first_new)
        raise


def _remove_empty_folders(top: Path) -> None:
    for root, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
        try:
            os.rmdir(root)
        except OSError:
            return


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
def atomic_paths(
    targets: Sequence[Union[str, Path]],
    prepared: Optional[Mapping[Union[str, Path], Union[str, Path]]] = None,
) -> Iterator[Sequence[Path]]:
    """Like :func:`atomic_path` for several files: all are renamed into place only
    after every one was written.

    ``prepared`` maps some of ``targets`` to files already complete beside them (an
    unfinished report that a resumed run finished, ``report.h5.partial``): the block
    gets those paths instead of fresh temporary files; they are renamed into place
    with the others and, on failure, kept (they hold work that ``--resume`` reuses).
    """
    targets = [Path(t) for t in targets]
    ready = {Path(t): Path(p) for t, p in (prepared or {}).items()}
    tmps, fresh = [], []
    try:
        for t in targets:
            if t in ready:
                tmps.append(ready[t])
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.", suffix=".part", dir=str(t.parent))
            os.close(fd)
            tmps.append(Path(tmp))
            fresh.append(Path(tmp))
        yield tmps
        mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; give them the usual mode
        for tmp, t in zip(tmps, targets):
            os.chmod(tmp, mode)
            try:
                os.replace(tmp, t)
            except OSError as exc:
                raise DeconvvizError(f"cannot write {t}: {exc.strerror or exc}") from None
    finally:
        for tmp in fresh:
            if tmp.exists():
                tmp.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot, so the caller falls back to two renames."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def check_folder_target(target: Union[str, Path]) -> Path:
    """Make sure the folder ``target`` can be (re)placed: its parent is a writable
    folder and ``target`` is not a file."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DeconvvizError(
            f"{target} exists and is not a folder; remove it or choose another --out"
        )
    check_writable_dir(target.parent, create=False)
    return target


@contextlib.contextmanager
def atomic_folder(target: Union[str, Path]) -> Iterator[Path]:
    """``with atomic_folder(out / "site") as tmp: fill(tmp)``: a whole folder, all or nothing.

    The block fills a fresh temporary folder beside ``target``; only when it
    succeeds does that folder take ``target``'s place (an existing ``target``
    is swapped out in one step where the system can, else renamed aside just
    before, and then deleted). On any failure (including Ctrl-C) the temporary
    folder is deleted and an existing ``target`` is left untouched.
    """
    target = check_folder_target(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=str(target.parent)))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes a 0700 folder
        try:
            if not target.exists():
                os.rename(tmp, target)
            elif not _exchange(tmp, target):  # tmp now holds the old folder, deleted below
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=str(target.parent)))
                os.rename(target, old / target.name)
                try:
                    os.rename(tmp, target)
                except OSError:
                    os.rename(old / target.name, target)
                    raise
        except OSError as exc:
            raise DeconvvizError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
