"""The resolver behind every command's ``--data``: a data-source string to an
:class:`~deconvviz.data.source.ImageSource`.

Sources are ``builtin`` (:mod:`.builtin`), an official CIFAR-10 folder
(:mod:`.cifar`), an ImageFolder tree or a folder holding ``train/`` and
``test/`` trees, a folder of loose images, or a single image file
(:mod:`.folders`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from ..errors import DeconvvizError
from .builtin import BUILTIN_SIZES, builtin_source
from .cifar import download_cifar10, find_cifar_batches, load_cifar_batches
from .folders import (
    IMAGE_EXTENSIONS,
    folder_source,
    image_files_source,
    imagefolder_entries,
    is_image,
)
from .preprocess import image_size_pair
from .source import ImageSource

__all__ = ["resolve_source"]


def resolve_source(
    spec: Optional[str] = None,
    split: Optional[str] = "test",
    *,
    download: bool = False,
    image_size: Tuple[int, int] = (32, 32),
    resize_size: Optional[int] = None,
    interpolation: str = "bilinear",
    workers: int = 0,
    skip_unreadable: bool = False,
    limit: Optional[int] = None,
) -> ImageSource:
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
    size = image_size_pair(image_size)
    if limit is not None and int(limit) < 1:
        raise DeconvvizError(f"limit must be 1 or more, got {limit}")
    decode = {
        "size": size,
        "resize_size": resize_size,
        "interpolation": interpolation,
        "workers": workers,
        "skip_unreadable": skip_unreadable,
        "limit": limit,
    }
    if spec == "builtin" or spec.startswith("builtin:"):
        sp = spec.split(":", 1)[1] if ":" in spec else (split or "test")
        if sp not in BUILTIN_SIZES:
            raise DeconvvizError(f"builtin split must be 'train' or 'test', got {sp!r}")
        return builtin_source(sp, size[0])
    path = Path(spec).expanduser()
    if download:
        if find_cifar_batches(path) is None:
            download_cifar10(path)
    if not path.exists():
        raise DeconvvizError(f"data path {spec} does not exist")
    if path.is_file():
        if not is_image(path):
            raise DeconvvizError(
                f"{spec} is not an image file (known extensions: {', '.join(IMAGE_EXTENSIONS)})"
            )
        return image_files_source(
            [str(path)],
            size,
            resize_size=resize_size,
            interpolation=interpolation,
            workers=workers,
            skip_unreadable=skip_unreadable,
        )
    official = find_cifar_batches(path)
    if official is not None:
        return load_cifar_batches(official, split or "test")
    sp = split or "test"
    if (path / sp).is_dir() and any(p.is_dir() for p in (path / sp).iterdir()):
        path = path / sp
        chosen_split = sp
    else:
        chosen_split = None
    try:
        subdirs = sorted(p for p in path.iterdir() if p.is_dir())
        loose = sorted(p for p in path.iterdir() if p.is_file() and is_image(p))
    except OSError as exc:
        raise DeconvvizError(f"cannot read data folder {spec}: {exc}") from None
    if subdirs:
        classes, samples = imagefolder_entries(path)
        if samples:
            return folder_source(
                [s[0] for s in samples],
                [s[1] for s in samples],
                classes,
                description=str(path),
                kind="imagefolder",
                split=chosen_split,
                **decode,
            )
    if loose:
        return folder_source(
            [str(p) for p in loose],
            [-1] * len(loose),
            [],
            description=str(path),
            kind="images",
            split=None,
            **decode,
        )
    raise DeconvvizError(
        f"no images found in {spec} (expected an ImageFolder tree, a "
        "cifar-10-batches-py folder, or image files)"
    )
