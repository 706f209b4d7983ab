"""The report's layers: each kept seed projected back to pixels and cut beside its image patch.

For every scanned layer, the kept images are read once (:func:`kept_images`), and
:func:`layer_parts` yields the layer's report without projections and patches together
with an iterator that projects its seeds with the deconvnet in batched passes
(:mod:`deconvviz.engine.deconv.seeds`) and cuts the image patch under each seed's
receptive field (:mod:`deconvviz.engine.net.geometry`), one chunk of features at a time
(:func:`~deconvviz.store.report_h5.features_per_chunk`), so memory holds one chunk.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, List, Tuple

import numpy as np
import torch

from ..data.source import ImageSource
from ..engine.deconv.seeds import project_seeds
from ..engine.net.geometry import extract_patches, windows_for
from ..engine.net.network import layer_key
from ..engine.statistics import feature_statistics
from ..engine.topk import TopK
from ..progress import Progress
from ..store.report_h5 import ImageTable, LayerReport, features_per_chunk
from ..store.statistics_h5 import FeatureStatistics
from .report_scan import Scan

__all__ = ["kept_images", "layer_parts", "layer_reports", "with_progress"]


def kept_images(source: ImageSource, scan: Scan) -> ImageTable:
    """Every kept image, read once whatever the number of layers that keep it."""
    wanted = sorted(
        {int(i) for t in scan.tops.values() for i in t.image_index.reshape(-1).tolist()}
    )
    pixels = source.read_indices(wanted)
    paths = list(source.paths) if source.paths else []
    return ImageTable(
        index=np.asarray(wanted, dtype=np.int64),
        pixels=pixels.numpy().astype(np.uint8, copy=False),
        label=source.labels[wanted].numpy().astype(np.int64) if wanted else np.zeros(0, np.int64),
        path=[str(paths[i]) if paths else "" for i in wanted],
    )


def layer_parts(
    model, scan: Scan, table: ImageTable, *, rule, device
) -> Iterator[Tuple[LayerReport, Iterator[Tuple[int, np.ndarray, np.ndarray]]]]:
    """Per layer: its report without projections and patches, and an iterator that
    projects and cuts them one chunk of features at a time (see
    :func:`~deconvviz.store.report_h5.features_per_chunk`), so memory holds one chunk."""
    images = {int(i): torch.from_numpy(table.pixels[j]) for j, i in enumerate(table.index)}
    for info in scan.infos:
        key = layer_key(info)
        top = scan.tops[key]
        F_, kk = top.image_index.shape
        rows = np.searchsorted(table.index, top.image_index.reshape(-1).numpy())
        box, origin = windows_for(info, top.position.reshape(-1, 2))
        head = LayerReport(
            layer=info.index if info.index is not None else -1,
            node="" if isinstance(key, int) else key,
            path=str(info.path),
            op=info.what,
            output_size=info.output_size,
            rf_size=info.rf_size,
            rf_jump=info.rf_jump,
            rf_start=info.rf_start,
            activation=top.activation.numpy().astype(np.float32),
            image_index=top.image_index.numpy(),
            label=table.label[rows].reshape(F_, kk).astype(np.int64),
            position=top.position.numpy(),
            projection=None,
            patch=None,
            patch_box=box.reshape(F_, kk, 4).numpy(),
            patch_origin=origin.reshape(F_, kk, 2).numpy(),
            feature=None if scan.features is None else np.asarray(scan.features, np.int64),
        )
        if scan.maxima is not None:  # feature statistics (issue 20), one row per kept feature
            values = scan.maxima[key].values.numpy()
            head.stats = FeatureStatistics(
                **feature_statistics(
                    values if scan.features is None else values[head.feature_ids],
                    scan.labels.numpy(),
                    scan.classes,
                    head.label,
                )
            )
        yield (
            head,
            _chunks(
                model,
                info,
                key,
                top,
                table,
                images,
                rule=rule,
                device=device,
                scan=scan,
                ids=head.feature_ids,
            ),
        )


def _runs(ids: np.ndarray) -> List[Tuple[int, int]]:
    """``(first row, rows)`` of each run of consecutive channel numbers in ``ids``."""
    runs, start = [], 0
    for r in range(1, len(ids) + 1):
        if r == len(ids) or ids[r] != ids[r - 1] + 1:
            runs.append((start, r - start))
            start = r
    return runs


def _chunks(model, info, key, top: TopK, table: ImageTable, images, *, rule, device, scan, ids):
    F_, kk = top.image_index.shape
    step = features_per_chunk(kk, table.pixels.shape[1], info.rf_size)
    # Row r is channel ids[r]: each call projects a run of consecutive channels.
    for r0, count in _runs(ids):
        for f0 in range(r0, r0 + count, step):
            f1 = min(r0 + count, f0 + step)
            part = TopK(top.activation[f0:f1], top.image_index[f0:f1], top.position[f0:f1])
            n = f1 - f0
            projections, _ = project_seeds(
                model,
                images,
                {key: part},
                rule=rule,
                device=device,
                mean=scan.mean,
                std=scan.std,
                windows=True,
                first_feature=int(ids[f0]),
                graph=scan.graph,
            )
            flat_idx = part.image_index.reshape(-1)
            rows = np.searchsorted(table.index, flat_idx.numpy())
            seed_pix = (
                torch.from_numpy(table.pixels[rows])
                if flat_idx.numel()
                else torch.zeros((0, 3) + tuple(info.image_size), dtype=torch.uint8)
            )
            patch, _, _ = extract_patches(info, seed_pix, part.position.reshape(-1, 2))
            yield (f0, projections[key].numpy(), patch.reshape(n, kk, *patch.shape[1:]).numpy())


def layer_reports(model, scan: Scan, table: ImageTable, *, rule, device) -> Iterator[LayerReport]:
    """Each layer whole, in memory (for :func:`~deconvviz.runs.report_run.build_report`)."""
    for head, chunks in layer_parts(model, scan, table, rule=rule, device=device):
        parts = list(chunks)  # a layer has at least one feature: one chunk
        yield replace(
            head,
            projection=np.concatenate([p for _, p, _ in parts]),
            patch=np.concatenate([q for _, _, q in parts]),
        )


def with_progress(chunks, bar: Progress):
    """``chunks`` (of :func:`layer_parts`) passed on, ``bar`` moved by each one's features."""
    for f0, projection, patch in chunks:
        yield f0, projection, patch
        bar.update(projection.shape[0])
