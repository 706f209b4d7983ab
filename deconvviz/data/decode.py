"""Decoding many image files, in order, in this process or in parallel worker processes.

Worker processes come from a torch ``DataLoader`` (``num_workers``): each takes a
chunk of consecutive files, and the chunks come back in order, so the decoded
pixels are identical whatever the number of workers. A file that cannot be read
comes back as its one-line message instead of raising inside a worker, so the
caller can stop with that line (or skip the file).
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..errors import DeconvvizError, notice

__all__ = ["decode_files", "check_workers"]

# One worker item: a few dozen files, so the inter-process traffic stays small.
_CHUNK = 32

Decoded = Tuple[Optional[np.ndarray], Optional[dict], Optional[str]]


class _Chunks(Dataset):
    def __init__(self, paths: Sequence[str], decode: Callable):
        self.paths, self.decode = list(paths), decode

    def __len__(self) -> int:
        return -(-len(self.paths) // _CHUNK)

    def __getitem__(self, i: int) -> List[Decoded]:
        out = []
        for p in self.paths[i * _CHUNK : (i + 1) * _CHUNK]:
            try:
                pixels, info = self.decode(p)
                out.append((pixels, info, None))
            except DeconvvizError as exc:
                out.append((None, None, str(exc)))
        return out


def _as_is(batch):
    return batch


def check_workers(workers: int) -> int:
    """Validate ``--workers`` (a notice, not a failure, beyond the machine's cores)."""
    workers = int(workers)
    if workers < 0:
        raise DeconvvizError(f"--workers must be 0 or more, got {workers}")
    cores = os.cpu_count() or 1
    if workers > cores:
        notice(
            f"--workers {workers} is more than this machine's {cores} cores; decoding "
            "will not get faster beyond that"
        )
    return workers


def decode_files(paths: Sequence[str], decode: Callable, workers: int = 0) -> Iterator[Decoded]:
    """Yield ``(pixels, info, None)`` or ``(None, None, message)`` for each of ``paths``,
    in order. ``decode(path) -> (pixels, info)`` must be picklable (a module-level
    function or a ``functools.partial`` of one) when ``workers > 0``."""
    chunks = _Chunks(paths, decode)
    if workers <= 0 or len(chunks) <= 1:
        for i in range(len(chunks)):
            yield from chunks[i]
        return
    loader = DataLoader(
        chunks,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=4,
        persistent_workers=False,
    )
    for batch in loader:
        yield from batch
