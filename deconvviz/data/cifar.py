"""The official CIFAR-10 python batches (``cifar-10-batches-py``, as torchvision
downloads it): find them, read a split, download them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DeconvvizError
from .source import ImageSource

__all__ = ["CIFAR10_CLASSES", "find_cifar_batches", "load_cifar_batches", "download_cifar10"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"


def find_cifar_batches(path: Path) -> Optional[Path]:
    for cand in (path, path / "cifar-10-batches-py"):
        if (
            (cand / "batches.meta").is_file()
            or (cand / "test_batch").is_file()
            or (cand / "data_batch_1").is_file()
        ):
            return cand
    return None


def load_cifar_batches(folder: Path, split: str) -> ImageSource:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        f = folder / name
        if not f.is_file():
            raise DeconvvizError(
                f"official CIFAR-10 folder {folder} has no {name} (needed for split {split!r})"
            )
        try:
            with open(f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = entry.get("labels", entry.get("fine_labels"))
            lab = np.asarray(lab, dtype=np.int64)
        except Exception as exc:  # a damaged batch file: say which one
            raise DeconvvizError(f"cannot read CIFAR-10 batch {f}: {exc}") from None
        if lab.shape[0] != data.shape[0]:
            raise DeconvvizError(
                f"CIFAR-10 batch {f} has {data.shape[0]} images but {lab.shape[0]} labels"
            )
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
    return ImageSource(
        description=f"{folder}:{split}",
        kind="cifar10-official",
        split=split,
        labels=torch.from_numpy(np.concatenate(labels)),
        class_names=classes,
        images=torch.from_numpy(np.concatenate(images)),
    )


def download_cifar10(root: Path) -> Path:
    """Download and unpack the official CIFAR-10 into ``root``; return the batches folder."""
    try:
        from torchvision.datasets.utils import download_and_extract_archive

        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(
            _CIFAR_URL, str(root), filename="cifar-10-python.tar.gz", md5=_CIFAR_MD5
        )
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeconvvizError(
            f"could not download CIFAR-10 into {root} ({reason}); "
            "without internet access, point --data at an existing copy"
        ) from None
    found = find_cifar_batches(root)
    if found is None:
        raise DeconvvizError(f"download finished but no cifar-10-batches-py folder in {root}")
    return found
