"""The feature statistics of a report's scan: recorded in the top-k pass, kept across
``--resume``, merged across ``torchrun`` ranks, computed per layer (issue 20).

A report's scan (:mod:`deconvviz.report`) records every image's maximum of every
feature (:class:`~deconvviz.engine.statistics.MaximaRecorder`). When the scan saves
its state for ``--resume``, the maxima go to one raw float16 file per layer beside
the state (``.scan-state[.rankRofW].maxima{j}.f16``): written whole at the first
save, then only the columns of the images scanned since, so saving stays cheap for
VGG-16 (0.42 GB of maxima over 50,000 images) even when it happens every 20 images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..engine.statistics import MaximaRecorder, feature_statistics, gather_maxima
from ..errors import DeconvvizError
from ..store.statistics import FeatureStatistics

__all__ = ["ScanMaxima", "layer_statistics"]


class ScanMaxima:
    """The per-image maxima of every scanned layer (``keys``, ``features``) over
    ``num_images`` images; ``recorders`` is what :func:`~deconvviz.engine.topk.scan_topk`
    takes as ``maxima``. ``state_stem``: the scan state's path without ``.pt`` (None:
    no state kept)."""

    def __init__(self, keys: List[object], features: List[int], num_images: int,
                 state_stem: Optional[Path] = None):
        self.keys = list(keys)
        self.recorders: Dict[object, MaximaRecorder] = {
            key: MaximaRecorder(f, num_images) for key, f in zip(self.keys, features)}
        self.num_images = int(num_images)
        self.stem = state_stem
        self._saved = None       # images saved so far (None: no file written yet)

    def _file(self, j: int) -> Path:
        return self.stem.with_name(f"{self.stem.name}.maxima{j}.f16")

    def files(self) -> List[Path]:
        """The state files (whether they exist or not)."""
        return [] if self.stem is None else [self._file(j) for j in range(len(self.keys))]

    def save(self, start: int, stop: int) -> None:
        """Put the maxima of images ``start .. stop - 1`` into the state files (every
        image the first time); call before the scan state itself is saved."""
        for j, key in enumerate(self.keys):
            values = self.recorders[key].values.numpy()
            path = self._file(j)
            if self._saved is None:
                values.tofile(path)
                continue
            disk = np.memmap(path, dtype=np.float16, mode="r+", shape=values.shape)
            disk[:, start:stop] = values[:, start:stop]
            disk.flush()
            del disk
        self._saved = stop

    def load(self) -> None:
        """Read the maxima saved with the scan state being resumed."""
        for j, key in enumerate(self.keys):
            rec = self.recorders[key]
            path = self._file(j)
            want = rec.values.numel() * 2
            if not path.is_file() or path.stat().st_size != want:
                raise DeconvvizError(f"--resume: the saved scan state's maxima {path} are "
                                     "missing or damaged; remove the state or run without "
                                     "--resume")
            rec.values.copy_(torch.from_numpy(
                np.fromfile(path, dtype=np.float16).reshape(tuple(rec.values.shape))))
        self._saved = 0

    def gather(self, device) -> None:
        """Combine the ranks' maxima (under ``torchrun``; every rank must call it)."""
        for key in self.keys:
            rec = self.recorders[key]
            rec.values = gather_maxima(rec.values, device)

    def remove_files(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)


def layer_statistics(maxima: MaximaRecorder, labels: torch.Tensor, num_classes: int,
                     top_labels: np.ndarray) -> FeatureStatistics:
    """A layer's :class:`FeatureStatistics` from its recorded maxima (every image seen)."""
    if maxima.missing():  # pragma: no cover - a broken shard layout
        raise RuntimeError(f"{maxima.missing()} images have no recorded maxima after the scan")
    return FeatureStatistics(**feature_statistics(maxima.values.numpy(), labels.numpy(),
                                                  num_classes, top_labels))
