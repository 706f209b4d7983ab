"""The data-source abstraction: an ordered set of ``uint8`` images with labels.

An :class:`ImageSource` holds its images in memory or reads them batch by batch
from a decoded-image cache file (written by :mod:`.folders`);
:class:`ImageDataset` wraps one as a torch ``Dataset``; :func:`normalize` and
:func:`denormalize` convert between pixels and model input.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DeconvvizError

__all__ = ["ImageSource", "ImageDataset", "normalize", "denormalize"]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8`` ``(B, 3, H, W)`` -> float32 model input ``((x / 255) - mean) / std``."""
    x = images.to(torch.float32).div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model input ``(B, 3, H, W)`` -> pixel values in ``[0, 1]`` (clipped)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0.0, 1.0)


class ImageSource:
    """An ordered set of ``uint8`` images ``(N, 3, H, W)`` with labels.

    Images live either in memory (``images``) or in a decoded cache file that is
    read batch by batch, so a scan over the source holds one batch at a time.
    ``rows`` (increasing): the cache rows that make up the source, where some rows
    of the cache are left out (unreadable files, see :func:`resolve_source`);
    image ``i`` is cache row ``rows[i]``.
    """

    def __init__(
        self,
        *,
        description: str,
        kind: str,
        split: Optional[str],
        labels: torch.Tensor,
        class_names: Sequence[str],
        images: Optional[torch.Tensor] = None,
        cache_file: Optional[Path] = None,
        shape: Optional[Tuple[int, int, int]] = None,
        fingerprint: Optional[str] = None,
        paths: Optional[List[str]] = None,
        rows: Optional[Sequence[int]] = None,
    ):
        self.description = description
        self.kind = kind
        self.split = split
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.paths = paths
        self._images = images
        self._cache_file = cache_file
        if images is not None:
            self.shape = tuple(images.shape[1:])
        else:
            self.shape = tuple(shape)
        self._offset = None
        self._fingerprint = fingerprint
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        #: Files left out by ``--skip-unreadable`` (recorded in outputs' provenance).
        self.skipped: List[str] = []
        #: ``[index, message]`` of each file that could not be read (before skipping).
        self.unreadable: List[list] = []

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"ImageSource({self.description!r}, {len(self)} images, {self.kind})"

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.shape[1], self.shape[2]

    @property
    def cache_file(self) -> Optional[Path]:
        """The decoded-image cache file the images are read from; ``None`` where they
        are held in memory."""
        return self._cache_file

    @property
    def fingerprint(self) -> str:
        """sha256 of the decoded pixels and labels (identifies the data exactly)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for start in range(0, len(self), 4096):
                h.update(self.read(start, min(len(self), start + 4096)).numpy().tobytes())
            h.update(self.labels.numpy().astype("<i8").tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def read(self, start: int, stop: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images ``start:stop`` as ``uint8`` ``(n, 3, H, W)``: a fresh tensor, or the
        first ``n`` rows of ``out`` (a contiguous ``uint8`` buffer of at least ``n``
        images, e.g. reused batch after batch by a scan) filled in place."""
        start, stop = max(0, start), min(len(self), stop)
        n = max(0, stop - start)
        if out is not None and (
            out.dtype != torch.uint8
            or not out.is_contiguous()
            or out.shape[0] < n
            or tuple(out.shape[1:]) != self.shape
        ):
            raise ValueError(f"read buffer must be contiguous uint8 (>= {n}, *{self.shape})")
        if self._images is not None:
            if out is None:
                return self._images[start:stop].clone()
            return out[:n].copy_(self._images[start:stop])
        per = int(np.prod(self.shape))
        buf = np.empty(n * per, dtype=np.uint8) if out is None else out[:n].numpy().reshape(-1)
        if self._rows is None or n == 0:
            self._read_rows(start, n, buf)
        else:
            # The kept rows of start:stop and the few left-out rows between them are
            # read in one go, then the left-out ones dropped.
            rows = self._rows[start:stop]
            first, span = int(rows[0]), int(rows[-1]) - int(rows[0]) + 1
            if span == n:
                self._read_rows(first, n, buf)
            else:
                block = np.empty(span * per, dtype=np.uint8)
                self._read_rows(first, span, block)
                buf.reshape(n, per)[:] = block.reshape(span, per)[rows - first]
        return torch.from_numpy(buf.reshape((n,) + self.shape)) if out is None else out[:n]

    def _read_rows(self, first: int, count: int, buf: np.ndarray) -> None:
        """Cache rows ``first:first + count`` into the flat ``uint8`` buffer ``buf``."""
        per = int(np.prod(self.shape))
        with open(self._cache_file, "rb") as f:
            if self._offset is None:
                self._offset = _npy_data_offset(f)
            f.seek(self._offset + first * per)
            got = f.readinto(memoryview(buf[: count * per]))
        if got != count * per:
            raise DeconvvizError(f"decoded-image cache {self._cache_file} is truncated; delete it")

    def read_indices(self, indices: Sequence[int]) -> torch.Tensor:
        """Images at the given indices (any order) as ``uint8`` ``(n, 3, H, W)``."""
        idx = [int(i) for i in indices]
        if self._images is not None:
            return (
                self._images[torch.as_tensor(idx, dtype=torch.long)].clone()
                if idx
                else self._images[:0].clone()
            )
        if not idx:
            return torch.empty((0,) + self.shape, dtype=torch.uint8)
        return torch.cat([self.read(i, i + 1) for i in idx])

    def batches(
        self, batch_size: int, start: int = 0, stop: Optional[int] = None
    ) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(offset, uint8 images, labels)`` for consecutive batches."""
        stop = len(self) if stop is None else min(stop, len(self))
        for s in range(start, stop, batch_size):
            e = min(stop, s + batch_size)
            yield s, self.read(s, e), self.labels[s:e]

    def subset(self, indices: Sequence[int]) -> "ImageSource":
        """The images at ``indices`` (in that order) as an in-memory source."""
        idx = [int(i) for i in indices]
        if any(not 0 <= i < len(self) for i in idx):
            raise DeconvvizError(f"image index out of range 0..{len(self) - 1}")
        return ImageSource(
            description=f"{self.description} (subset of {len(idx)})",
            kind=self.kind,
            split=self.split,
            labels=self.labels[torch.as_tensor(idx, dtype=torch.long)],
            class_names=self.class_names,
            images=self.read_indices(idx),
            paths=[self.paths[i] for i in idx] if self.paths else None,
        )

    def all_images(self) -> torch.Tensor:
        """Every image in memory as ``uint8`` ``(N, 3, H, W)``."""
        if self._images is not None:
            return self._images
        return self.read(0, len(self))


class ImageDataset(Dataset):
    """A torch ``Dataset`` of ``(normalised image (3, H, W), label)`` over a source."""

    def __init__(self, source: ImageSource, mean: Sequence[float], std: Sequence[float]):
        self.source = source
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.classes = source.class_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        img = normalize(self.source.read(index, index + 1), self.mean, self.std)[0]
        return img, int(self.source.labels[index])


def _npy_data_offset(f) -> int:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(f)
    else:
        np.lib.format.read_array_header_2_0(f)
    return f.tell()
