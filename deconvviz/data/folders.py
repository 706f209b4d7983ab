"""Folders and files of images as sources.

ImageFolder trees (``root/<class>/<image>``, in torchvision's order), folders of
loose images and lists of image files become sources. Decoding JPEGs costs more
than a forward pass over them, so a decoded folder is cached (:mod:`.cache`) and read
back in batches without decoding again. Unreadable files are stopped at, or with
``skip_unreadable`` left out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DeconvvizError, notice
from .cache import cache_dir, cache_key, cached_meta, decode_to_cache
from .decode import decode_files
from .preprocess import check_resize, decode_image, image_size_pair
from .source import ImageSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "cache_dir",
    "is_image",
    "imagefolder_entries",
    "folder_source",
    "image_files_source",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def imagefolder_entries(root: Path) -> Tuple[List[str], List[Tuple[str, int]]]:
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
            for folder, _, files in sorted(
                os.walk(os.path.join(str(root), name), followlinks=True)
            ):
                # os.path.join(folder, f), without its per-call checks (50,000 files)
                prefix = folder if folder.endswith(os.sep) else folder + os.sep
                samples.extend(
                    (prefix + f, label)
                    for f in sorted(files)
                    if f.lower().endswith(IMAGE_EXTENSIONS)
                )
    except OSError as exc:
        raise DeconvvizError(f"cannot read image folder {root}: {exc}") from None
    return classes, samples


def _decode(
    path: str,
    size: Tuple[int, int],
    resize_size: Optional[int] = None,
    interpolation: str = "bilinear",
) -> Tuple[np.ndarray, dict]:
    """One image file as the model sees it (see :func:`.preprocess.decode_image`)."""
    return decode_image(path, size, resize_size, interpolation, draft=True)


def folder_source(
    paths: List[str],
    labels: List[int],
    classes: Sequence[str],
    *,
    description: str,
    kind: str,
    split: Optional[str],
    size: Tuple[int, int],
    use_cache: bool = True,
    resize_size: Optional[int] = None,
    interpolation: str = "bilinear",
    workers: int = 0,
    skip_unreadable: bool = False,
    limit: Optional[int] = None,
    _key: Optional[str] = None,
) -> ImageSource:
    if not paths:
        raise DeconvvizError(f"no images found in {description}")
    resize_size = max(size) if resize_size is None else int(resize_size)
    check_resize(size, resize_size, interpolation)
    if limit is not None and int(limit) < len(paths):
        limit = int(limit)
        # The first ``limit`` files: read from the whole folder's cache where an earlier
        # run made one, else only they are decoded (and cached for the next run).
        key = cache_key(paths, labels, size, resize_size, interpolation) if use_cache else None
        whole = key is not None and cached_meta(key) is not None
        source = folder_source(
            paths if whole else paths[:limit],
            labels if whole else labels[:limit],
            classes,
            description=description,
            kind=kind,
            split=split,
            size=size,
            use_cache=use_cache,
            resize_size=resize_size,
            interpolation=interpolation,
            workers=workers,
            skip_unreadable=None,
            limit=None,
            _key=key if whole else None,  # the whole folder's, already made
        )
        return _first_files(source, limit, skip_unreadable)
    label_t = torch.as_tensor(labels, dtype=torch.int64)
    if use_cache:
        key = _key or cache_key(paths, labels, size, resize_size, interpolation)
        target = cache_dir() / f"{key}.npy"
        meta_file = cache_dir() / f"{key}.json"
        meta = cached_meta(key)
        if meta is None:
            try:
                decode = functools.partial(
                    _decode, size=size, resize_size=resize_size, interpolation=interpolation
                )
                stats = decode_to_cache(
                    decode_files(paths, decode, workers),
                    (len(paths), 3) + tuple(size),
                    target,
                    progress=True,
                )
            except OSError as exc:  # unwritable cache: fall back to decoding in memory
                notice(f"cannot write the decoded-image cache ({exc}); decoding in memory")
                return folder_source(
                    paths,
                    labels,
                    classes,
                    description=description,
                    kind=kind,
                    split=split,
                    size=size,
                    use_cache=False,
                    resize_size=resize_size,
                    interpolation=interpolation,
                    workers=workers,
                    skip_unreadable=skip_unreadable,
                )
            meta = dict(stats, count=len(paths))
            tmp = meta_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, meta_file)
        _report_conversions(meta, size, resize_size)
        h = hashlib.sha256(meta["pixels_sha256"].encode())
        h.update(label_t.numpy().astype("<i8").tobytes())
        source = ImageSource(
            description=description,
            kind=kind,
            split=split,
            labels=label_t,
            class_names=classes,
            cache_file=target,
            shape=(3,) + tuple(size),
            fingerprint=h.hexdigest(),
            paths=list(paths),
        )
        source.unreadable = [list(u) for u in meta.get("unreadable") or []]
        return _without_unreadable(source, source.unreadable, skip_unreadable)
    stats = {"converted": 0, "resized": 0, "upscaled": 0, "transparent": 0}
    decode = functools.partial(
        _decode, size=size, resize_size=resize_size, interpolation=interpolation
    )
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
    source = ImageSource(
        description=description,
        kind=kind,
        split=split,
        labels=label_t,
        class_names=classes,
        images=images,
        paths=list(paths),
    )
    source.unreadable = unreadable
    return _without_unreadable(source, unreadable, skip_unreadable)


def _first_files(source: ImageSource, limit: int, skip: bool) -> ImageSource:
    """The first ``limit`` files of a folder source whose unreadable files were kept (as
    zeros, :attr:`ImageSource.unreadable` listing them), then the unreadable ones among
    them stopped at or skipped. Its fingerprint is that of its own pixels, so it
    is the same whether it was read from the whole folder's cache or its own."""
    full = source
    n = min(limit, len(full))
    common = dict(
        description=full.description,
        kind=full.kind,
        split=full.split,
        labels=full.labels[:n],
        class_names=full.class_names,
        paths=list(full.paths[:n]) if full.paths else None,
    )
    if full.cache_file is None:
        first = ImageSource(images=full.all_images()[:n], **common)
    else:
        first = ImageSource(cache_file=full.cache_file, shape=full.shape, **common)
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
        raise DeconvvizError(
            f"no readable images in {source.description}: all {len(bad)} could not be read"
        )
    skipped = [source.paths[i] for i in sorted(bad)]
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    notice(f"skipped {len(skipped)} unreadable image(s) of {len(source)}: {shown}")
    common = dict(
        description=source.description,
        kind=source.kind,
        split=source.split,
        labels=source.labels[torch.as_tensor(keep, dtype=torch.long)],
        class_names=source.class_names,
        paths=[source.paths[i] for i in keep],
    )
    if source.cache_file is None:
        kept = ImageSource(images=source.read_indices(keep), **common)
    else:
        # Still read from the cache batch by batch (never all in memory): image i is
        # cache row keep[i]. The fingerprint names the full cache and the rows kept.
        h = hashlib.sha256(source.fingerprint.encode())
        h.update(np.asarray(keep, dtype="<i8").tobytes())
        kept = ImageSource(
            cache_file=source.cache_file,
            shape=source.shape,
            rows=keep,
            fingerprint=h.hexdigest(),
            **common,
        )
    kept.skipped = skipped
    return kept


def _report_conversions(stats: dict, size: Tuple[int, int], resize_size: int) -> None:
    if stats.get("converted"):
        notice(f"converted {stats['converted']} image(s) to RGB")
    if stats.get("transparent"):
        notice(f"composited {stats['transparent']} image(s) with transparent pixels on mid-grey")
    if stats.get("resized"):
        up = f"; {stats['upscaled']} of them upscaled" if stats.get("upscaled") else ""
        notice(
            f"resized {stats['resized']} image(s) to {size[0]}x{size[1]} (shorter side to "
            f"{resize_size}, centre crop{up})"
        )


def image_files_source(
    files: Sequence[str],
    image_size: Tuple[int, int] = (32, 32),
    *,
    resize_size: Optional[int] = None,
    interpolation: str = "bilinear",
    workers: int = 0,
    skip_unreadable: bool = False,
) -> ImageSource:
    """A source made of the given image files, in the given order (labels ``-1``).

    Images of another size than ``image_size`` (H, W) are resized and
    centre-cropped as in :func:`resolve_source`.
    """
    for f in files:
        if not os.path.isfile(f):
            raise DeconvvizError(f"image {f} does not exist")
    desc = files[0] if len(files) == 1 else f"{len(files)} image files"
    return folder_source(
        list(files),
        [-1] * len(files),
        [],
        description=desc,
        kind="images",
        split=None,
        size=image_size_pair(image_size),
        use_cache=False,
        resize_size=resize_size,
        interpolation=interpolation,
        workers=workers,
        skip_unreadable=skip_unreadable,
    )
