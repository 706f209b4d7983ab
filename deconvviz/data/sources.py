"""Data sources: one resolver behind every command.

A *data source* is a fixed, ordered set of RGB images of one size, held as
``uint8`` ``(N, 3, H, W)``, with integer labels (``-1`` where unknown) and class
names. Sources are:

* ``builtin``: a procedurally generated image set (no files needed);
* an official CIFAR-10 folder (``cifar-10-batches-py``, as torchvision downloads it);
* an ImageFolder tree (``root/<class>/<image>``), or a folder holding ``train/``
  and ``test/`` trees;
* a folder of loose images, or a single image file.

Decoding JPEGs costs more than a forward pass over them, so decoded folders are
cached as one ``uint8`` array file (see :func:`cache_dir`) and read back in
batches without decoding again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DeconvvizError, notice
from ..progress import Progress
from .decode import decode_files
from .preprocess import _DRAFT_GAP, _check, _pair, decode_image

__all__ = [
    "ImageSource",
    "ImageDataset",
    "resolve_source",
    "synthetic_images",
    "normalize",
    "denormalize",
    "cache_dir",
    "IMAGE_EXTENSIONS",
    "BUILTIN_CLASSES",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BUILTIN_CLASSES = (
    "disc", "square", "triangle", "blobs", "stripes-0", "stripes-45",
    "stripes-90", "stripes-135", "checkerboard", "edge",
)
BUILTIN_SIZES = {"train": 10000, "test": 2000}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
# 2: images of another size are resized (shorter side) and centre-cropped, JPEGs drafted
_CACHE_VERSION = 3  # 3: transparent pixels composited on mid-grey


def cache_dir() -> Path:
    """Folder for decoded-image caches: ``$DECONVVIZ_CACHE`` or ``~/.cache/deconvviz``."""
    env = os.environ.get("DECONVVIZ_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deconvviz"


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

    def __init__(self, *, description: str, kind: str, split: Optional[str],
                 labels: torch.Tensor, class_names: Sequence[str],
                 images: Optional[torch.Tensor] = None,
                 cache_file: Optional[Path] = None, shape: Optional[Tuple[int, int, int]] = None,
                 fingerprint: Optional[str] = None, paths: Optional[List[str]] = None,
                 rows: Optional[Sequence[int]] = None):
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
        if out is not None and (out.dtype != torch.uint8 or not out.is_contiguous()
                                or out.shape[0] < n or tuple(out.shape[1:]) != self.shape):
            raise ValueError(f"read buffer must be contiguous uint8 (>= {n}, *{self.shape})")
        if self._images is not None:
            if out is None:
                return self._images[start:stop].clone()
            return out[:n].copy_(self._images[start:stop])
        per = int(np.prod(self.shape))
        buf = np.empty(n * per, dtype=np.uint8) if out is None else \
            out[:n].numpy().reshape(-1)
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
            got = f.readinto(memoryview(buf[:count * per]))
        if got != count * per:
            raise DeconvvizError(f"decoded-image cache {self._cache_file} is truncated; delete it")

    def read_indices(self, indices: Sequence[int]) -> torch.Tensor:
        """Images at the given indices (any order) as ``uint8`` ``(n, 3, H, W)``."""
        idx = [int(i) for i in indices]
        if self._images is not None:
            return self._images[torch.as_tensor(idx, dtype=torch.long)].clone() if idx else \
                self._images[:0].clone()
        if not idx:
            return torch.empty((0,) + self.shape, dtype=torch.uint8)
        return torch.cat([self.read(i, i + 1) for i in idx])

    def batches(self, batch_size: int, start: int = 0, stop: Optional[int] = None
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
        return ImageSource(description=f"{self.description} (subset of {len(idx)})",
                           kind=self.kind, split=self.split,
                           labels=self.labels[torch.as_tensor(idx, dtype=torch.long)],
                           class_names=self.class_names, images=self.read_indices(idx),
                           paths=[self.paths[i] for i in idx] if self.paths else None)

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


# --------------------------------------------------------------------------- builtin

def synthetic_images(n: int, seed: int = 0, size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """A deterministic, learnable image set: ``(uint8 (n, 3, size, size), labels (n,))``.

    Ten classes (:data:`BUILTIN_CLASSES`): discs, squares, triangles, colour
    blobs, stripes at four orientations, checkerboards and straight edges, drawn
    in random colours at random places and scales over gradient backgrounds with
    a little noise. The same ``(n, seed, size)`` always gives the same images.
    """
    g = torch.Generator().manual_seed(int(seed))

    def u(*shape):
        return torch.rand(shape, generator=g)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    yy, xx = yy.unsqueeze(0), xx.unsqueeze(0)                       # (1, S, S)
    labels = torch.arange(n) % len(BUILTIN_CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    bg0, bg1, fg = u(n, 3), u(n, 3), u(n, 3)
    for _ in range(16):  # keep the figure distinguishable from the background
        bad = (fg - (bg0 + bg1) / 2).abs().sum(1) < 0.6
        fg = torch.where(bad.unsqueeze(1), u(n, 3), fg)
    ang = u(n, 1, 1) * 2 * np.pi
    t = (xx * torch.cos(ang) + yy * torch.sin(ang) + 1.5) / 3.0        # (n, S, S)
    img = bg0.view(n, 3, 1, 1) * (1 - t.unsqueeze(1)) + bg1.view(n, 3, 1, 1) * t.unsqueeze(1)
    cx, cy = 0.25 + 0.5 * u(n, 1, 1), 0.25 + 0.5 * u(n, 1, 1)
    r = 0.15 + 0.2 * u(n, 1, 1)
    a, b, c3 = u(n, 1, 1), u(n, 1, 1), u(n, 1, 1)                     # per-class extras
    blobs = u(n, 3, 3)
    mask = torch.zeros((n, size, size), dtype=torch.bool)
    for c in range(len(BUILTIN_CLASSES)):
        k = (labels == c).nonzero().flatten()
        if k.numel() == 0:
            continue
        X, Y, CX, CY, R = xx, yy, cx[k], cy[k], r[k]
        if c == 0:  # disc
            m = (X - CX) ** 2 + (Y - CY) ** 2 < R ** 2
        elif c == 1:  # square (axis-aligned)
            m = ((X - CX).abs() < R * 0.9) & ((Y - CY).abs() < R * 0.9)
        elif c == 2:  # upward triangle
            rel = (Y - (CY - R)) / (2 * R)
            m = (rel >= 0) & (rel <= 1) & ((X - CX).abs() <= rel * R)
        elif c == 3:  # three colour blobs
            bl = blobs[k]
            m = torch.zeros((k.numel(), size, size), dtype=torch.bool)
            for j in range(3):
                bx, by = bl[:, j, 0].view(-1, 1, 1), bl[:, j, 1].view(-1, 1, 1)
                br = 0.08 + 0.1 * bl[:, j, 2].view(-1, 1, 1)
                m |= (X - bx) ** 2 + (Y - by) ** 2 < br ** 2
        elif 4 <= c <= 7:  # stripes at 0, 45, 90, 135 degrees (+-5)
            theta = np.deg2rad(45 * (c - 4)) + np.deg2rad(10) * (a[k] - 0.5)
            period = 0.12 + 0.15 * b[k]
            proj = Y * torch.cos(theta) - X * torch.sin(theta)
            m = torch.frac(proj / period + c3[k]) < 0.5
        elif c == 8:  # checkerboard
            period = 0.15 + 0.15 * a[k]
            m = ((torch.floor(X / period + b[k]) + torch.floor(Y / period + c3[k])) % 2) == 0
        else:  # straight edge through the image at a random angle
            theta = a[k] * 2 * np.pi
            m = (X - CX) * torch.cos(theta) + (Y - CY) * torch.sin(theta) > 0
        mask[k] = m
    img = torch.where(mask.unsqueeze(1), fg.view(n, 3, 1, 1), img)
    img = img + 0.04 * torch.randn((n, 3, size, size), generator=g)
    out = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return out, labels.to(torch.int64)


def _builtin_source(split: str, image_size: int) -> ImageSource:
    n = BUILTIN_SIZES[split]
    seed = 0 if split == "train" else 1
    images, labels = synthetic_images(n, seed=seed, size=image_size)
    return ImageSource(description=f"builtin:{split}", kind="builtin", split=split,
                       labels=labels, class_names=BUILTIN_CLASSES, images=images)


# --------------------------------------------------------------------------- official CIFAR-10

def _find_cifar_batches(path: Path) -> Optional[Path]:
    for cand in (path, path / "cifar-10-batches-py"):
        if (cand / "batches.meta").is_file() or (cand / "test_batch").is_file() or \
                (cand / "data_batch_1").is_file():
            return cand
    return None


def _load_cifar_batches(folder: Path, split: str) -> ImageSource:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        f = folder / name
        if not f.is_file():
            raise DeconvvizError(f"official CIFAR-10 folder {folder} has no {name} "
                                 f"(needed for split {split!r})")
        try:
            with open(f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = entry.get("labels", entry.get("fine_labels"))
            lab = np.asarray(lab, dtype=np.int64)
        except Exception as exc:  # a damaged batch file: say which one
            raise DeconvvizError(f"cannot read CIFAR-10 batch {f}: {exc}") from None
        if lab.shape[0] != data.shape[0]:
            raise DeconvvizError(f"CIFAR-10 batch {f} has {data.shape[0]} images but "
                                 f"{lab.shape[0]} labels")
        images.append(data)
        labels.append(lab)
    classes = list(CIFAR10_CLASSES)
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as fh:
                classes = list(pickle.load(fh, encoding="latin1")["label_names"])
        except Exception:
            pass
    return ImageSource(description=f"{folder}:{split}", kind="cifar10-official", split=split,
                       labels=torch.from_numpy(np.concatenate(labels)), class_names=classes,
                       images=torch.from_numpy(np.concatenate(images)))


def download_cifar10(root: Path) -> Path:
    """Download and unpack the official CIFAR-10 into ``root``; return the batches folder."""
    try:
        from torchvision.datasets.utils import download_and_extract_archive
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(_CIFAR_URL, str(root), filename="cifar-10-python.tar.gz",
                                     md5=_CIFAR_MD5)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeconvvizError(f"could not download CIFAR-10 into {root} ({reason}); "
                             "without internet access, point --data at an existing copy") from None
    found = _find_cifar_batches(root)
    if found is None:
        raise DeconvvizError(f"download finished but no cifar-10-batches-py folder in {root}")
    return found


# --------------------------------------------------------------------------- folders and files

def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _imagefolder_entries(root: Path) -> Tuple[List[str], List[Tuple[str, int]]]:
    """Class names and (path, label) in torchvision's ``ImageFolder`` order: classes
    are the sorted sub-folder names, samples each class's files with an image
    extension (any case) in a sorted walk that follows links. Written here rather
    than taken from ``torchvision.datasets`` because importing torchvision costs over
    a second of every run's start-up (tested against torchvision's own listing)."""
    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {root}.")
        samples = []
        for label, name in enumerate(classes):
            for folder, _, files in sorted(os.walk(os.path.join(str(root), name),
                                                   followlinks=True)):
                samples.extend((os.path.join(folder, f), label) for f in sorted(files)
                               if f.lower().endswith(IMAGE_EXTENSIONS))
    except OSError as exc:
        raise DeconvvizError(f"cannot read image folder {root}: {exc}") from None
    return classes, samples


def _decode(path: str, size: Tuple[int, int], resize_size: Optional[int] = None,
            interpolation: str = "bilinear") -> Tuple[np.ndarray, dict]:
    """One image file as the model sees it (see :func:`.preprocess.decode_image`)."""
    return decode_image(path, size, resize_size, interpolation, draft=True)


def _cache_key(paths: Sequence[str], labels: Sequence[int], size: Tuple[int, int],
               resize_size: int, interpolation: str) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION}:{size[0]}x{size[1]}:{resize_size}:{interpolation}:"
                       f"draft{_DRAFT_GAP}".encode())
    for p, lab in zip(paths, labels):
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\0{lab}\n".encode())
    return h.hexdigest()[:32]


def _npy_data_offset(f) -> int:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(f)
    else:
        np.lib.format.read_array_header_2_0(f)
    return f.tell()


def _decode_to_cache(paths: Sequence[str], size: Tuple[int, int], target: Path,
                     progress: bool, resize_size: Optional[int] = None,
                     interpolation: str = "bilinear", workers: int = 0) -> dict:
    """Decode images in order into ``target`` (``.npy``, uint8), written atomically;
    ``workers`` > 0 decodes in that many processes (same pixels). An unreadable file
    is stored as zeros and listed in the returned ``"unreadable"`` (index, message)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shape = (len(paths), 3, size[0], size[1])
    fd, tmp = tempfile.mkstemp(prefix=".decode-", suffix=".npy", dir=str(target.parent))
    stats = {"converted": 0, "resized": 0, "upscaled": 0, "transparent": 0}
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            chunk = []
            total = len(paths)
            with Progress(total, "decoding images (once)", enabled=progress, delay=2.0) as bar:
                decode = functools.partial(_decode, size=size, resize_size=resize_size,
                                           interpolation=interpolation)
                unreadable = []
                for i, (pixels, info, error) in enumerate(decode_files(paths, decode, workers)):
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


def _cached_meta(key: str) -> Optional[dict]:
    """The metadata of the decode cache ``key`` if its array and metadata are there."""
    target, meta_file = cache_dir() / f"{key}.npy", cache_dir() / f"{key}.json"
    if not (target.is_file() and meta_file.is_file()):
        return None
    try:
        return json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None


def _folder_source(paths: List[str], labels: List[int], classes: Sequence[str], *,
                   description: str, kind: str, split: Optional[str],
                   size: Tuple[int, int], use_cache: bool = True,
                   resize_size: Optional[int] = None,
                   interpolation: str = "bilinear", workers: int = 0,
                   skip_unreadable: bool = False, limit: Optional[int] = None) -> ImageSource:
    if not paths:
        raise DeconvvizError(f"no images found in {description}")
    resize_size = max(size) if resize_size is None else int(resize_size)
    _check(size, resize_size, interpolation)
    if limit is not None and int(limit) < len(paths):
        limit = int(limit)
        # The first ``limit`` files: read from the whole folder's cache where an earlier
        # run made one, else only they are decoded (and cached for the next run).
        whole = use_cache and _cached_meta(_cache_key(paths, labels, size, resize_size,
                                                      interpolation)) is not None
        source = _folder_source(paths if whole else paths[:limit],
                                labels if whole else labels[:limit], classes,
                                description=description, kind=kind, split=split, size=size,
                                use_cache=use_cache, resize_size=resize_size,
                                interpolation=interpolation, workers=workers,
                                skip_unreadable=None, limit=None)
        return _first_files(source, limit, skip_unreadable)
    label_t = torch.as_tensor(labels, dtype=torch.int64)
    if use_cache:
        key = _cache_key(paths, labels, size, resize_size, interpolation)
        target = cache_dir() / f"{key}.npy"
        meta_file = cache_dir() / f"{key}.json"
        meta = _cached_meta(key)
        if meta is None:
            try:
                stats = _decode_to_cache(paths, size, target, progress=True,
                                         resize_size=resize_size, interpolation=interpolation,
                                         workers=workers)
            except OSError as exc:  # unwritable cache: fall back to decoding in memory
                notice(f"cannot write the decoded-image cache ({exc}); decoding in memory")
                return _folder_source(paths, labels, classes, description=description, kind=kind,
                                      split=split, size=size, use_cache=False,
                                      resize_size=resize_size, interpolation=interpolation,
                                      workers=workers, skip_unreadable=skip_unreadable)
            meta = dict(stats, count=len(paths))
            tmp = meta_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, meta_file)
        _report_conversions(meta, size, resize_size)
        h = hashlib.sha256(meta["pixels_sha256"].encode())
        h.update(label_t.numpy().astype("<i8").tobytes())
        source = ImageSource(description=description, kind=kind, split=split, labels=label_t,
                             class_names=classes, cache_file=target, shape=(3,) + tuple(size),
                             fingerprint=h.hexdigest(), paths=list(paths))
        source.unreadable = [list(u) for u in meta.get("unreadable") or []]
        return _without_unreadable(source, source.unreadable, skip_unreadable)
    stats = {"converted": 0, "resized": 0, "upscaled": 0, "transparent": 0}
    decode = functools.partial(_decode, size=size, resize_size=resize_size,
                               interpolation=interpolation)
    pixels, unreadable = [], []
    for i, (image, info, error) in enumerate(decode_files(paths, decode, workers)):
        if error is not None:
            unreadable.append([i, error])
            image = np.zeros((3,) + tuple(size), dtype=np.uint8)
        else:
            for key in stats:
                stats[key] += int(info[key])
        pixels.append(image)
    images = torch.from_numpy(np.stack(pixels))
    _report_conversions(stats, size, resize_size)
    source = ImageSource(description=description, kind=kind, split=split, labels=label_t,
                         class_names=classes, images=images, paths=list(paths))
    source.unreadable = unreadable
    return _without_unreadable(source, unreadable, skip_unreadable)


def _first_files(source: ImageSource, limit: int, skip: bool) -> ImageSource:
    """The first ``limit`` files of a folder source whose unreadable files were kept (as
    zeros, :attr:`ImageSource.unreadable` listing them), then the unreadable ones among
    them stopped at or skipped. Its fingerprint is that of its own pixels, so it
    is the same whether it was read from the whole folder's cache or its own."""
    full = source
    n = min(limit, len(full))
    common = dict(description=full.description, kind=full.kind, split=full.split,
                  labels=full.labels[:n], class_names=full.class_names,
                  paths=list(full.paths[:n]) if full.paths else None)
    if full._images is not None:
        first = ImageSource(images=full._images[:n], **common)
    else:
        first = ImageSource(cache_file=full._cache_file, shape=full.shape, **common)
    first.unreadable = [u for u in full.unreadable if int(u[0]) < n]
    return _without_unreadable(first, first.unreadable, skip)


def _without_unreadable(source: ImageSource, unreadable: Sequence, skip: bool) -> ImageSource:
    """Stop at the first unreadable image (one line), or with ``skip`` drop them all with
    one summary notice; ``source.skipped`` lists the dropped files (for provenance).
    ``skip`` None keeps them (as zeros) without a word, for :func:`_first_files`."""
    if not unreadable or skip is None:
        return source
    if not skip:
        raise DeconvvizError(f"{unreadable[0][1]}; --skip-unreadable leaves such files out")
    bad = {int(i) for i, _ in unreadable}
    keep = [i for i in range(len(source)) if i not in bad]
    if not keep:
        raise DeconvvizError(f"no readable images in {source.description}: all "
                             f"{len(bad)} could not be read")
    skipped = [source.paths[i] for i in sorted(bad)]
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    notice(f"skipped {len(skipped)} unreadable image(s) of {len(source)}: {shown}")
    common = dict(description=source.description, kind=source.kind, split=source.split,
                  labels=source.labels[torch.as_tensor(keep, dtype=torch.long)],
                  class_names=source.class_names, paths=[source.paths[i] for i in keep])
    if source._images is not None:
        kept = ImageSource(images=source.read_indices(keep), **common)
    else:
        # Still read from the cache batch by batch (never all in memory): image i is
        # cache row keep[i]. The fingerprint names the full cache and the rows kept.
        h = hashlib.sha256(source.fingerprint.encode())
        h.update(np.asarray(keep, dtype="<i8").tobytes())
        kept = ImageSource(cache_file=source._cache_file, shape=source.shape, rows=keep,
                           fingerprint=h.hexdigest(), **common)
    kept.skipped = skipped
    return kept


def _report_conversions(stats: dict, size: Tuple[int, int], resize_size: int) -> None:
    if stats.get("converted"):
        notice(f"converted {stats['converted']} image(s) to RGB")
    if stats.get("transparent"):
        notice(f"composited {stats['transparent']} image(s) with transparent pixels on mid-grey")
    if stats.get("resized"):
        up = f"; {stats['upscaled']} of them upscaled" if stats.get("upscaled") else ""
        notice(f"resized {stats['resized']} image(s) to {size[0]}x{size[1]} (shorter side to "
               f"{resize_size}, centre crop{up})")


def image_files_source(files: Sequence[str], image_size: Tuple[int, int] = (32, 32), *,
                       resize_size: Optional[int] = None,
                       interpolation: str = "bilinear", workers: int = 0,
                       skip_unreadable: bool = False) -> ImageSource:
    """A source made of the given image files, in the given order (labels ``-1``).

    Images of another size than ``image_size`` (H, W) are resized and
    centre-cropped as in :func:`resolve_source`.
    """
    for f in files:
        if not os.path.isfile(f):
            raise DeconvvizError(f"image {f} does not exist")
    desc = files[0] if len(files) == 1 else f"{len(files)} image files"
    return _folder_source(list(files), [-1] * len(files), [], description=desc, kind="images",
                          split=None, size=_pair(image_size), use_cache=False,
                          resize_size=resize_size, interpolation=interpolation, workers=workers,
                          skip_unreadable=skip_unreadable)


def resolve_source(spec: Optional[str] = None, split: Optional[str] = "test", *,
                   download: bool = False, image_size: Tuple[int, int] = (32, 32),
                   resize_size: Optional[int] = None,
                   interpolation: str = "bilinear", workers: int = 0,
                   skip_unreadable: bool = False, limit: Optional[int] = None) -> ImageSource:
    """Turn a data-source string into an :class:`ImageSource`.

    ``spec`` is ``"builtin"`` (default), a path to an official CIFAR-10 folder,
    an ImageFolder tree, a folder with ``train/`` and ``test/`` trees, a folder
    of loose images, or one image file. ``split`` (``"train"`` or ``"test"``)
    chooses the split where the source has several. With ``download=True`` an
    official CIFAR-10 copy is downloaded into ``spec`` when none is there.

    Image files whose size is not ``image_size`` ``(H, W)`` are resized so their
    shorter side is ``resize_size`` (default ``max(H, W)``) with ``interpolation``
    and centre-cropped to ``H x W``, as torchvision's ``weights.transforms()`` do
    (:mod:`deconvviz.data.preprocess`; a model's values come from
    ``Preprocessing.from_meta(model.meta).source_kwargs()``). Images of the right
    size (CIFAR-10 for the bundled network) are taken as they are; the official
    CIFAR-10 batches are always 32x32.

    ``limit``: of a folder of image files, only the first ``limit`` files are
    decoded (and cached for later runs), unless a cache of the whole folder exists;
    unreadable files among them are then stopped at or skipped as usual. Sources
    held in memory (``builtin``, official CIFAR-10) are returned whole: a scan's own
    ``limit`` takes their first images.
    """
    spec = "builtin" if spec in (None, "") else str(spec)
    if split is not None and split not in ("train", "test"):
        raise DeconvvizError(f"split must be 'train' or 'test', got {split!r}")
    size = _pair(image_size)
    if limit is not None and int(limit) < 1:
        raise DeconvvizError(f"limit must be 1 or more, got {limit}")
    decode = {"size": size, "resize_size": resize_size, "interpolation": interpolation,
              "workers": workers, "skip_unreadable": skip_unreadable, "limit": limit}
    if spec == "builtin" or spec.startswith("builtin:"):
        sp = spec.split(":", 1)[1] if ":" in spec else (split or "test")
        if sp not in BUILTIN_SIZES:
            raise DeconvvizError(f"builtin split must be 'train' or 'test', got {sp!r}")
        return _builtin_source(sp, size[0])
    path = Path(spec).expanduser()
    if download:
        if _find_cifar_batches(path) is None:
            download_cifar10(path)
    if not path.exists():
        raise DeconvvizError(f"data path {spec} does not exist")
    if path.is_file():
        if not _is_image(path):
            raise DeconvvizError(f"{spec} is not an image file (known extensions: "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
        return image_files_source([str(path)], size, resize_size=resize_size,
                                  interpolation=interpolation, workers=workers,
                                  skip_unreadable=skip_unreadable)
    official = _find_cifar_batches(path)
    if official is not None:
        return _load_cifar_batches(official, split or "test")
    sp = split or "test"
    if (path / sp).is_dir() and any(p.is_dir() for p in (path / sp).iterdir()):
        path = path / sp
        chosen_split = sp
    else:
        chosen_split = None
    try:
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        loose = sorted(p for p in path.iterdir() if p.is_file() and _is_image(p))
    except OSError as exc:
        raise DeconvvizError(f"cannot read data folder {spec}: {exc}") from None
    if subdirs:
        classes, samples = _imagefolder_entries(path)
        if samples:
            return _folder_source([s[0] for s in samples], [s[1] for s in samples], classes,
                                  description=str(path), kind="imagefolder", split=chosen_split,
                                  **decode)
    if loose:
        return _folder_source([str(p) for p in loose], [-1] * len(loose), [],
                              description=str(path), kind="images", split=None, **decode)
    raise DeconvvizError(f"no images found in {spec} (expected an ImageFolder tree, a "
                         "cifar-10-batches-py folder, or image files)")
