"""Max-activation reports over whole data sets (Zeiler & Fergus, Figure 2).

One pass over a data source keeps, for every feature of the chosen layers, the
``k`` images on which the feature fires most (each image counted once per
feature, at its strongest position). The kept seeds are then projected back to
pixels with the deconvnet, in batched passes, and cut out beside the image patch
under their receptive field. The result is written as one HDF5 file (layout in
``docs/report.md``, :data:`REPORT_FORMAT` version :data:`REPORT_VERSION`) and as
PNGs; :func:`render_report` redraws the PNGs from the HDF5 file alone.

Ranking rule, used everywhere (scan, merge, file): activation descending, then
image index ascending. Within an image, a feature's position is the first
maximum in row-major order. Both make the result deterministic, and make
:func:`merge_topk` associative, so shards scanned by several processes merge to
exactly what one process finds.

When the source has fewer than ``k`` images, the report keeps ``min(k, N)``
columns (every image, ranked): files never hold padding entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import __version__
from .atomic import atomic_paths, check_writable_dir
from .data import ImageSource, normalize
from .deconvnet import RULES, project_recorded, recorded_forward
from .errors import DeconvvizError
from .layers import LayerInfo, boxes_for, check_supported, conv_stack, get_layer, list_layers
from .progress import Progress
from .recording import record
from .render import grid_image, image_to_display, to_display

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "TopK", "LayerReport", "Report", "scan_topk",
           "merge_topk", "empty_topk", "finalize_topk", "gather_topk", "project_seeds",
           "project_topk",
           "extract_patches", "build_report", "write_report_h5", "read_report_h5",
           "render_report", "report_paths", "save_report", "distributed_context",
           "feature_panel", "layer_cell"]

REPORT_FORMAT = "deconvviz-report"
REPORT_VERSION = 1
REPORT_FILE = "report.h5"

# Datasets every layer group must hold, with their dtype.
_LAYER_DATASETS = {
    "activation": np.float32, "image_index": np.int64, "position": np.int64,
    "projection": np.float32, "patch": np.uint8, "patch_box": np.int64,
    "patch_origin": np.int64, "label": np.int64,
}
_ROOT_ATTRS = ("format", "format_version", "package_version", "checkpoint_sha256",
               "data_source", "split", "num_images", "command_line", "top_k", "layers")


# --------------------------------------------------------------------------- top-k

@dataclass
class TopK:
    """The ``k`` best (image, position) of every feature of one layer.

    ``activation``: ``(F, k)`` float32, descending per feature (ties: smaller
    image index first); ``image_index``: ``(F, k)`` int64, index in the data
    source's order; ``position``: ``(F, k, 2)`` int64 (row, col) in the layer's
    output. Unfilled slots (fewer than ``k`` images seen) hold activation
    ``-inf``, image index ``-1`` and position ``(-1, -1)``; they rank last.
    """

    activation: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.activation.shape[1])


def empty_topk(features: int, k: int) -> TopK:
    """A :class:`TopK` with every slot unfilled (the identity of :func:`merge_topk`)."""
    return TopK(torch.full((features, k), float("-inf"), dtype=torch.float32),
                torch.full((features, k), -1, dtype=torch.int64),
                torch.full((features, k, 2), -1, dtype=torch.int64))


def _rank(activation: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """Column order ``(F, n)`` sorting each row by activation desc, then image index asc.

    Two stable sorts (index first, then value) give a total order that does not
    depend on where candidates sat, which makes merging associative.
    """
    by_index = torch.argsort(image_index, dim=1, stable=True)
    values = activation.gather(1, by_index)
    by_value = torch.argsort(values, dim=1, descending=True, stable=True)
    return by_index.gather(1, by_value)


def _select(activation, image_index, position, k: int) -> TopK:
    order = _rank(activation, image_index)[:, :k]
    return TopK(activation.gather(1, order), image_index.gather(1, order),
                position.gather(1, order.unsqueeze(-1).expand(-1, -1, 2)))


def merge_topk(a: TopK, b: TopK, k: Optional[int] = None) -> TopK:
    """The best ``k`` (default ``a.k``) of the union of two top-k lists of one layer.

    Associative and commutative as long as an image appears in at most one of
    the inputs (true for disjoint shards): activation descending, then smaller
    image index first.
    """
    if a.activation.shape[0] != b.activation.shape[0]:
        raise ValueError(f"cannot merge top-k lists of {a.activation.shape[0]} and "
                         f"{b.activation.shape[0]} features")
    k = a.k if k is None else k
    return _select(torch.cat([a.activation, b.activation], 1),
                   torch.cat([a.image_index, b.image_index], 1),
                   torch.cat([a.position, b.position], 1), k)


def finalize_topk(top: TopK, num_images: int) -> TopK:
    """Drop the unfilled columns: keep ``min(k, num_images)`` columns.

    Every image is a candidate of every feature, so after a full scan exactly
    ``min(k, N)`` slots per feature are filled.
    """
    keep = min(top.k, int(num_images))
    out = TopK(top.activation[:, :keep].contiguous(), top.image_index[:, :keep].contiguous(),
               top.position[:, :keep].contiguous())
    if keep and int(out.image_index.min()) < 0:  # pragma: no cover - a broken shard layout
        raise RuntimeError("top-k has unfilled slots after a full scan")
    return out


def _model_dtype(model: nn.Module) -> torch.dtype:
    p = next(iter(conv_stack(model).parameters()), None)
    return p.dtype if p is not None else torch.float32


def _normalization(model: nn.Module, mean=None, std=None):
    if mean is not None and std is not None:
        return list(mean), list(std)
    meta = getattr(model, "meta", None) or {}
    norm = meta.get("normalization")
    if not norm:
        raise DeconvvizError("the model carries no normalisation (model.meta['normalization']); "
                             "pass mean and std")
    return list(norm["mean"]), list(norm["std"])


def _layer_infos(model: nn.Module, layers: Optional[Sequence[int]],
                 image_size: Tuple[int, int]) -> List[LayerInfo]:
    if not layers:
        infos = list_layers(model, image_size)
        if not infos:
            raise DeconvvizError("the model's conv stack has no Conv2d layer")
        return infos
    return [get_layer(model, int(L), image_size) for L in sorted(set(int(v) for v in layers))]


def scan_topk(model: nn.Module, source: ImageSource, layers: Optional[Sequence[int]] = None,
              k: int = 9, *, batch_size: int = 500, device: Union[str, torch.device] = "cpu",
              progress: Optional[Progress] = None, shard: Optional[Tuple[int, int]] = None,
              start: int = 0, stop: Optional[int] = None, mean=None, std=None
              ) -> Dict[int, TopK]:
    """One pass over ``source[start:stop]``: the top-``k`` images of every feature.

    For each image and feature, the activation is the maximum of the layer's
    block output (after ReLU and pool) over positions, at the first maximum in
    row-major order. Memory holds one batch plus ``features x k`` per layer.
    ``shard=(rank, world)`` scans only batches ``rank, rank + world, ...`` (batch
    boundaries are those of the unsharded scan, so every image is computed in
    the same batch as in one process); image indices stay global.
    Returns ``{layer: TopK}`` with unfilled slots where fewer than ``k`` images
    were seen (see :func:`finalize_topk`). No switches are recorded: the scan
    runs the plain stack.
    """
    if k < 1:
        raise DeconvvizError(f"top k must be at least 1, got {k}")
    if batch_size < 1:
        raise DeconvvizError(f"batch size must be at least 1, got {batch_size}")
    mean, std = _normalization(model, mean, std)
    infos = _layer_infos(model, layers, source.image_size)
    end = max(i.end for i in infos)
    check_supported(model, end)
    modules = list(conv_stack(model))[:end]
    layer_at = {i.end - 1: i for i in infos}
    tops = {i.index: empty_topk(i.features, k) for i in infos}
    stop = len(source) if stop is None else min(int(stop), len(source))
    rank, world = shard if shard is not None else (0, 1)
    dtype = _model_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b, offset in enumerate(range(start, stop, batch_size)):
                if b % world != rank:
                    continue
                images = source.read(offset, min(stop, offset + batch_size))
                n = images.shape[0]
                x = normalize(images.to(device), mean, std).to(dtype)
                for m_i, m in enumerate(modules):
                    x = m(x)
                    info = layer_at.get(m_i)
                    if info is None:
                        continue
                    # Reduce at once: a later in-place module must not see changed values.
                    flat = x.reshape(n, x.shape[1], -1)
                    pos = flat.argmax(dim=2)                       # first maximum
                    val = flat.gather(2, pos.unsqueeze(-1)).squeeze(-1).float()
                    if not bool(torch.isfinite(val).all()):
                        raise DeconvvizError(
                            f"layer {info.index} gives non-finite activations on images "
                            f"{offset}..{offset + n - 1}; the checkpoint or the data is damaged")
                    w = x.shape[-1]
                    pos = pos.cpu()
                    cand_pos = torch.stack([pos // w, pos % w], dim=-1).transpose(0, 1)
                    cand_idx = torch.arange(offset, offset + n, dtype=torch.int64)
                    cand = TopK(val.cpu().t(), cand_idx.expand(info.features, n), cand_pos)
                    tops[info.index] = merge_topk(tops[info.index], cand, k)
                if progress is not None:
                    progress.update(n)
    finally:
        model.train(was_training)
    return tops


# --------------------------------------------------------------------------- distributed

@contextlib.contextmanager
def distributed_context(device: str = "cpu") -> Iterator[Tuple[int, int, str]]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group, yield
    ``(rank, world_size, device)``; otherwise yield ``(0, 1, device)``.

    The backend is gloo on CPU and nccl on CUDA (each rank on ``cuda:LOCAL_RANK``).
    The group is torn down on exit, also on failure.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        yield 0, 1, device
        return
    import torch.distributed as dist
    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def gather_topk(tops: Dict[int, TopK], device: Union[str, torch.device] = "cpu"
                ) -> Dict[int, TopK]:
    """All-gather every rank's top-k lists and merge them (identical on every rank).

    Needs an initialised ``torch.distributed`` process group; all ranks must
    call it with lists of the same layers and shapes.
    """
    import torch.distributed as dist
    world = dist.get_world_size()
    out = {}
    for layer in sorted(tops):
        parts = []
        t = tops[layer]
        for tensor in (t.activation, t.image_index, t.position):
            local = tensor.contiguous().to(device)
            bufs = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(bufs, local)
            parts.append([b.cpu() for b in bufs])
        ranked = [TopK(a, i, p) for a, i, p in zip(*parts)]
        out[layer] = reduce(lambda x, y: merge_topk(x, y, t.k), ranked)
    return out


# --------------------------------------------------------------------------- projections

def extract_patches(info: LayerInfo, images: torch.Tensor, position: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image patches under the receptive fields of output ``position`` s.

    ``images``: ``uint8 (S, 3, H, W)``, one per seed; ``position``: ``(S, 2)``.
    Returns ``(patch uint8 (S, 3, rf_h, rf_w), box int64 (S, 4), origin int64 (S, 2))``:
    ``box`` is ``(y0, x0, y1, x1)`` in image pixels, end exclusive, clipped at the
    border; ``origin`` the unclipped top-left of the receptive field. The patch
    is the full receptive-field window, the clipped crop placed at
    ``box[:2] - origin`` and zero where the window leaves the image.
    """
    pos = position.to(torch.int64).reshape(-1, 2)
    boxes = boxes_for(info, pos)
    origin = torch.stack([info.rf_start[0] + pos[:, 0] * info.rf_jump[0],
                          info.rf_start[1] + pos[:, 1] * info.rf_jump[1]], dim=1)
    rh, rw = info.rf_size
    patches = torch.zeros((pos.shape[0], images.shape[1], rh, rw), dtype=images.dtype)
    for s in range(pos.shape[0]):
        y0, x0, y1, x1 = (int(v) for v in boxes[s])
        if y1 <= y0 or x1 <= x0:
            continue
        oy, ox = y0 - int(origin[s, 0]), x0 - int(origin[s, 1])
        patches[s, :, oy:oy + y1 - y0, ox:ox + x1 - x0] = images[s, :, y0:y1, x0:x1]
    return patches, boxes, origin


def project_seeds(model: nn.Module, images: Dict[int, torch.Tensor], tops: Dict[int, TopK], *,
                  rule: str = "deconvnet", device: Union[str, torch.device] = "cpu",
                  mean=None, std=None, images_per_pass: int = 1024
                  ) -> Tuple[Dict[int, torch.Tensor], Dict[int, torch.Tensor]]:
    """Deconvnet projections of every kept seed of several layers, in batched passes.

    ``images`` maps image index to its ``uint8 (3, H, W)`` pixels; ``tops`` maps
    layer to its :class:`TopK` (no unfilled slots). Seed ``(f, j)`` of layer
    ``L`` is feature ``f`` at ``tops[L].position[f, j]`` of image
    ``tops[L].image_index[f, j]``, projected with that image's own switches.
    Per layer, the distinct images of its seeds go through one recorded forward
    pass up to that layer only (in chunks of ``images_per_pass`` images), and all
    the chunk's seeds go back in one batched reverse pass
    (:func:`deconvviz.deconvnet.project_recorded`).
    Returns ``({L: projections (F, k, 3, H, W) float32}, {L: seeded activation (F, k)})``.
    """
    mean, std = _normalization(model, mean, std)
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    dtype = _model_dtype(model)
    some = next(iter(images.values()), None)
    shape = tuple(some.shape) if some is not None else (3, 0, 0)
    projections, activations = {}, {}
    for L, top in tops.items():
        info = get_layer(model, L, shape[1:])
        F_, k = top.image_index.shape
        projections[L] = torch.zeros((F_, k) + shape, dtype=torch.float32)
        activations[L] = torch.zeros((F_, k), dtype=torch.float32)
        flat_idx = top.image_index.reshape(-1)
        wanted = torch.unique(flat_idx)            # sorted
        for c0 in range(0, wanted.numel(), images_per_pass):
            chunk = wanted[c0:c0 + images_per_pass]
            sel = torch.isin(flat_idx, chunk).nonzero().view(-1)
            local = torch.searchsorted(chunk, flat_idx[sel])
            pix = torch.stack([images[int(i)] for i in chunk])
            x = normalize(pix.to(device), mean, std).to(dtype)
            with torch.no_grad(), record(model, stop=info.end, masks=rule != "deconvnet") as rec:
                recorded_forward(model, x, info.end)
                proj, act, _ = project_recorded(
                    model, rec, info, local.to(device), (sel // k).to(device), mode="position",
                    rule=rule, position=top.position.reshape(-1, 2)[sel].to(device))
            projections[L].view(F_ * k, *shape)[sel] = proj.float().cpu()
            activations[L].view(-1)[sel] = act.float().cpu()
    return projections, activations


def project_topk(model: nn.Module, source: ImageSource, layer: int, top: TopK, *,
                 rule: str = "deconvnet", device: Union[str, torch.device] = "cpu",
                 mean=None, std=None, images: Optional[Dict[int, torch.Tensor]] = None
                 ) -> torch.Tensor:
    """Projections ``(F, k, 3, H, W)`` float32 of one layer's kept seeds (see
    :func:`project_seeds`). ``images`` may map image index to its ``uint8 (3, H, W)``
    pixels; they are read from ``source`` otherwise."""
    if images is None:
        wanted = sorted({int(i) for i in top.image_index.reshape(-1).tolist()})
        pix = source.read_indices(wanted)
        images = {i: pix[j] for j, i in enumerate(wanted)}
    return project_seeds(model, images, {layer: top}, rule=rule, device=device, mean=mean,
                         std=std)[0][layer]


# --------------------------------------------------------------------------- the report

@dataclass
class LayerReport:
    """Everything the report holds for one layer (``F`` features, ``k`` kept images each).

    ``activation (F, k)`` float32 descending; ``image_index (F, k)`` int64;
    ``label (F, k)`` int64 (-1 where unknown); ``position (F, k, 2)`` int64;
    ``projection (F, k, 3, H, W)`` float32 raw and signed; ``patch
    (F, k, 3, rf_h, rf_w)`` uint8; ``patch_box (F, k, 4)`` int64 (y0, x0, y1, x1);
    ``patch_origin (F, k, 2)`` int64 (see :func:`extract_patches`).
    """

    layer: int
    path: str
    output_size: Tuple[int, int]
    rf_size: Tuple[int, int]
    rf_jump: Tuple[int, int]
    rf_start: Tuple[int, int]
    activation: np.ndarray
    image_index: np.ndarray
    label: np.ndarray
    position: np.ndarray
    projection: np.ndarray
    patch: np.ndarray
    patch_box: np.ndarray
    patch_origin: np.ndarray

    @property
    def features(self) -> int:
        return int(self.activation.shape[0])

    @property
    def k(self) -> int:
        return int(self.activation.shape[1])


@dataclass
class Report:
    """A whole report: root metadata ``attrs`` and a :class:`LayerReport` per layer."""

    attrs: dict
    layers: Dict[int, LayerReport] = field(default_factory=dict)


def build_report(model: nn.Module, source: ImageSource, layers: Optional[Sequence[int]] = None,
                 k: int = 9, *, batch_size: int = 500, device: Union[str, torch.device] = "cpu",
                 rule: str = "deconvnet", progress: bool = True, limit: Optional[int] = None,
                 shard: Optional[Tuple[int, int]] = None, command_line: str = "",
                 timings: Optional[dict] = None
                 ) -> Optional[Report]:
    """Scan ``source`` once and build the paper's Figure 2 for every feature of ``layers``.

    ``model``: a network loaded with :func:`~deconvviz.checkpoint.load_model` (its
    ``meta`` gives normalisation and checkpoint hash); ``layers``: layer numbers
    (default: every conv layer); ``k``: images kept per feature; ``limit``: scan
    only the first ``limit`` images. With ``shard=(rank, world)`` inside an
    initialised ``torch.distributed`` group, each rank scans its share, the
    lists are merged exactly, and rank 0 projects and returns the report while
    other ranks return ``None``. The returned :class:`Report` is what
    :func:`write_report_h5` stores and :func:`render_report` draws. ``timings``, if
    given, receives the seconds spent in ``"scan"`` (including the merge across
    ranks) and ``"project"`` (projections and patches), for benchmarks.
    """
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    mean, std = _normalization(model)
    n = len(source) if limit is None else min(len(source), int(limit))
    if n < 1:
        raise DeconvvizError(f"{source.description} has no images to scan")
    infos = _layer_infos(model, layers, source.image_size)
    rank, world = shard if shard is not None else (0, 1)
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    # Each rank's share of images, for its progress bar (batches are dealt round-robin).
    mine = sum(min(n, s + batch_size) - s for b, s in enumerate(range(0, n, batch_size))
               if b % world == rank)
    with Progress(mine, "scan" if world == 1 else f"scan (rank {rank}/{world})",
                  enabled=progress and rank == 0) as bar:
        tops = scan_topk(model, source, [i.index for i in infos], k, batch_size=batch_size,
                         device=device, progress=bar, shard=shard, stop=n, mean=mean, std=std)
    if world > 1:
        tops = gather_topk(tops, device)
        if rank != 0:
            return None
    tops = {L: finalize_topk(t, n) for L, t in tops.items()}
    timings["scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Read every kept image once, whatever the number of layers that keep it.
    wanted = sorted({int(i) for t in tops.values() for i in t.image_index.reshape(-1).tolist()})
    pixels = source.read_indices(wanted)
    images = {i: pixels[j] for j, i in enumerate(wanted)}
    meta = getattr(model, "meta", None) or {}
    report = Report(attrs={
        "format": REPORT_FORMAT, "format_version": REPORT_VERSION,
        "package_version": __version__,
        "checkpoint_sha256": str(meta.get("sha256", "")),
        "checkpoint_path": str(meta.get("path", "")),
        "data_source": source.description, "data_kind": source.kind,
        "data_fingerprint": source.fingerprint,
        "split": source.split or "", "num_images": n, "command_line": command_line,
        "top_k": int(k), "layers": [i.index for i in infos], "rule": rule, "unpool": "switches",
        "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "image_size": list(source.image_size),
        "class_names": json.dumps(list(source.class_names)),
        "world_size": world,
    })
    projections, _ = project_seeds(model, images, tops, rule=rule, device=device, mean=mean,
                                   std=std)
    for info in infos:
        top = tops[info.index]
        flat_idx = top.image_index.reshape(-1)
        seed_pix = torch.stack([images[int(i)] for i in flat_idx]) if flat_idx.numel() else \
            torch.zeros((0, 3) + tuple(source.image_size), dtype=torch.uint8)
        patch, box, origin = extract_patches(info, seed_pix, top.position.reshape(-1, 2))
        F_, kk = top.image_index.shape
        labels = source.labels[flat_idx] if flat_idx.numel() else flat_idx
        report.layers[info.index] = LayerReport(
            layer=info.index, path=info.path, output_size=info.output_size,
            rf_size=info.rf_size, rf_jump=info.rf_jump, rf_start=info.rf_start,
            activation=top.activation.numpy().astype(np.float32),
            image_index=top.image_index.numpy(),
            label=labels.reshape(F_, kk).numpy().astype(np.int64),
            position=top.position.numpy(),
            projection=projections[info.index].numpy(),
            patch=patch.reshape(F_, kk, *patch.shape[1:]).numpy(),
            patch_box=box.reshape(F_, kk, 4).numpy(),
            patch_origin=origin.reshape(F_, kk, 2).numpy())
    timings["project"] = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- HDF5

def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise DeconvvizError("writing and reading reports needs h5py (pip install h5py)") from None
    return h5py


def write_report_h5(report: Report, path: Union[str, Path]) -> Path:
    """Write ``report`` to ``path`` as HDF5 (layout: ``docs/report.md``).

    Writes straight to ``path``; callers that must not leave half-written files
    write to a temporary path and rename (see :func:`save_report`).
    """
    h5py = _h5py()
    with h5py.File(path, "w", track_order=True) as f:
        for key, value in report.attrs.items():
            f.attrs[key] = np.asarray(value) if isinstance(value, (list, tuple)) else value
        for L in sorted(report.layers):
            lr = report.layers[L]
            g = f.create_group(f"layer{L}")
            g.attrs["layer"] = lr.layer
            g.attrs["path"] = lr.path
            g.attrs["features"] = lr.features
            g.attrs["k"] = lr.k
            for name in ("output_size", "rf_size", "rf_jump", "rf_start"):
                g.attrs[name] = np.asarray(getattr(lr, name), dtype=np.int64)
            for name, dtype in _LAYER_DATASETS.items():
                data = np.ascontiguousarray(getattr(lr, name), dtype=dtype)
                # No timestamps, so the same report gives the same bytes.
                g.create_dataset(name, data=data, track_times=False)
    return Path(path)


def _attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_report_h5(path: Union[str, Path]) -> Report:
    """Read and check a report written by :func:`write_report_h5`.

    Raises :class:`~deconvviz.errors.DeconvvizError` (one line) for a missing,
    damaged, foreign or newer-format file, or one whose arrays do not fit together.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DeconvvizError(f"report {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DeconvvizError(f"{path} is not a readable HDF5 file (damaged, truncated or not "
                             "a report)") from None
    try:
        with f:
            fmt = _attr(f.attrs.get("format", None))
            if fmt != REPORT_FORMAT:
                raise DeconvvizError(f"{path} is not a deconvviz report (format attribute "
                                     f"{fmt!r}, expected {REPORT_FORMAT!r})")
            missing = [a for a in _ROOT_ATTRS if a not in f.attrs]
            if missing:
                raise DeconvvizError(f"report {path} is damaged: root attribute(s) "
                                     f"{', '.join(missing)} missing")
            version = int(_attr(f.attrs["format_version"]))
            if version > REPORT_VERSION or version < 1:
                raise DeconvvizError(f"report {path} has format version {version}; this "
                                     f"deconvviz reads versions 1..{REPORT_VERSION}")
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            report = Report(attrs=attrs)
            layers = attrs["layers"]
            layers = [int(v) for v in (layers if isinstance(layers, list) else [layers])]
            H, W = (int(v) for v in attrs.get("image_size", [32, 32]))
            for L in layers:
                name = f"layer{L}"
                if name not in f or not isinstance(f[name], h5py.Group):
                    raise DeconvvizError(f"report {path} is damaged: group {name} missing")
                g = f[name]
                arrays = {}
                for ds, dtype in _LAYER_DATASETS.items():
                    if ds not in g or not isinstance(g[ds], h5py.Dataset):
                        raise DeconvvizError(f"report {path} is damaged: {name}/{ds} missing")
                    arrays[ds] = np.asarray(g[ds][()], dtype=dtype)
                F_, k = arrays["activation"].shape if arrays["activation"].ndim == 2 else (-1, -1)
                rf = tuple(int(v) for v in _attr(g.attrs.get("rf_size", [0, 0])))
                expect = {"activation": (F_, k), "image_index": (F_, k), "label": (F_, k),
                          "position": (F_, k, 2), "projection": (F_, k, 3, H, W),
                          "patch": (F_, k, 3) + rf, "patch_box": (F_, k, 4),
                          "patch_origin": (F_, k, 2)}
                for ds, shape in expect.items():
                    if F_ < 0 or arrays[ds].shape != shape:
                        raise DeconvvizError(f"report {path} is damaged: {name}/{ds} has shape "
                                             f"{arrays[ds].shape}, expected {shape}")
                report.layers[L] = LayerReport(
                    layer=L, path=str(_attr(g.attrs.get("path", ""))),
                    output_size=tuple(int(v) for v in _attr(g.attrs["output_size"])),
                    rf_size=rf,
                    rf_jump=tuple(int(v) for v in _attr(g.attrs["rf_jump"])),
                    rf_start=tuple(int(v) for v in _attr(g.attrs["rf_start"])),
                    **arrays)
    except DeconvvizError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        # h5py raises these for corrupted objects inside a readable file.
        raise DeconvvizError(f"report {path} is damaged: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return report


# --------------------------------------------------------------------------- PNGs

_TILE = 64  # per-feature PNG tiles are enlarged (nearest neighbour) to about this many pixels


def _tiles(lr: LayerReport, f: int) -> Tuple[np.ndarray, np.ndarray]:
    """Display tiles of feature ``f``: projections cut to the receptive field, and patches.

    Both ``(k, rf_h, rf_w, 3)`` in ``[0, 1]``. The projection of a seed is zero
    outside its receptive field, so the cut loses nothing and lines it up with
    the patch; patch pixels outside the image are drawn mid-grey.
    """
    rh, rw = lr.rf_size
    k = lr.k
    proj_cut = np.zeros((k, 3, rh, rw), dtype=np.float32)
    inside = np.zeros((k, rh, rw), dtype=bool)
    for j in range(k):
        y0, x0, y1, x1 = (int(v) for v in lr.patch_box[f, j])
        oy, ox = y0 - int(lr.patch_origin[f, j, 0]), x0 - int(lr.patch_origin[f, j, 1])
        proj_cut[j, :, oy:oy + y1 - y0, ox:ox + x1 - x0] = lr.projection[f, j, :, y0:y1, x0:x1]
        inside[j, oy:oy + y1 - y0, ox:ox + x1 - x0] = True
    proj = to_display(torch.from_numpy(proj_cut)) if k else np.zeros((0, rh, rw, 3))
    patch = image_to_display(torch.from_numpy(lr.patch[f])) if k else np.zeros((0, rh, rw, 3))
    patch = np.where(inside[..., None], patch, 0.5)
    return proj, patch


def layer_cell(lr: LayerReport, f: int) -> np.ndarray:
    """One feature's cell of the layer grid (as in the paper's Figure 2): its ``k``
    projections in a square block, beside its ``k`` patches in the same order.
    RGB ``(h, w, 3)`` in ``[0, 1]``."""
    proj, patch = _tiles(lr, f)
    cols = max(1, int(np.ceil(np.sqrt(lr.k))))
    left = grid_image(list(proj), cols, pad=1, background=1.0)
    right = grid_image(list(patch), cols, pad=1, background=1.0)
    gap = np.ones((left.shape[0], 2, 3))
    return np.concatenate([left, gap, right], axis=1)


def feature_panel(lr: LayerReport, f: int, scale: Optional[int] = None) -> np.ndarray:
    """One feature's PNG: top row its ``k`` projections (best first), bottom row the
    matching patches, each tile upscaled ``scale`` times (default: to about 64
    pixels, e.g. 4x for a 16x16 field). ``uint8 (h, w, 3)``, 2-pixel white gaps."""
    if scale is None:
        scale = max(1, _TILE // max(lr.rf_size))
    proj, patch = _tiles(lr, f)
    tiles = [np.kron(t, np.ones((scale, scale, 1))) for t in list(proj) + list(patch)]
    grid = grid_image(tiles, max(1, lr.k), pad=2, background=1.0)
    return (grid * 255).round().clip(0, 255).astype(np.uint8)


def _layer_figure(lr: LayerReport, title: str):
    from matplotlib.figure import Figure

    F_ = lr.features
    cols = max(1, int(np.ceil(np.sqrt(F_))))
    rows = -(-F_ // cols)
    cells = [layer_cell(lr, f) for f in range(F_)]
    ch, cw = cells[0].shape[:2]
    # At least 2.5 screen pixels per image pixel and 180 per cell, so small
    # receptive fields (6x6 in layer 1) stay legible.
    inch = max(2.5 * cw, 180) / 100
    fig = Figure(figsize=(cols * inch, rows * inch * (ch / cw) * 1.15 + 0.75), dpi=100)
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for f, cell in enumerate(cells):
        ax = axes.ravel()[f]
        ax.imshow(cell, interpolation="nearest")
        ax.set_title(f"feature {f}", fontsize=6, pad=2)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005,
                        top=1 - 0.75 / fig.get_figheight(), wspace=0.04, hspace=0.18)
    return fig


def report_paths(report: Report, out_dir: Union[str, Path]) -> Dict[str, Path]:
    """Where a report's files go: ``report.h5``, ``layer{L}.png`` and
    ``layer{L}/feature{f:03d}.png`` under ``out_dir`` (keys: ``"h5"``, ``"layer{L}"``,
    ``"layer{L}/feature{f}"``)."""
    out_dir = Path(out_dir)
    paths = {"h5": out_dir / REPORT_FILE}
    for L in sorted(report.layers):
        paths[f"layer{L}"] = out_dir / f"layer{L}.png"
        for f in range(report.layers[L].features):
            paths[f"layer{L}/feature{f}"] = out_dir / f"layer{L}" / f"feature{f:03d}.png"
    return paths


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(array).save(path, format="PNG")


def _draw_all(report: Report, targets: Dict[str, Path], tmp: Dict[str, Path]) -> None:
    src = report.attrs.get("data_source", "")
    for L in sorted(report.layers):
        lr = report.layers[L]
        title = (f"layer {L}: top {lr.k} of {report.attrs.get('num_images', '?')} images per "
                 f"feature ({src})\nleft: deconvnet projections, right: image patches")
        _layer_figure(lr, title).savefig(tmp[f"layer{L}"], format="png")
        for f in range(lr.features):
            _write_png(feature_panel(lr, f), tmp[f"layer{L}/feature{f}"])


def save_report(report: Report, out_dir: Union[str, Path], *, h5: bool = True,
                png: bool = True) -> List[Path]:
    """Write the report's HDF5 file and/or PNGs into ``out_dir``, all or nothing.

    Every file is written to a temporary file beside its target; only when all
    are complete are they renamed into place, so a failure or Ctrl-C leaves an
    earlier report untouched and no half-written file. Returns the paths written.
    """
    out_dir = check_writable_dir(out_dir)
    paths = report_paths(report, out_dir)
    keys = [k for k in paths if (k == "h5" and h5) or (k != "h5" and png)]
    if png:
        for L in report.layers:
            check_writable_dir(out_dir / f"layer{L}")
    targets = [paths[k] for k in keys]
    with atomic_paths(targets) as tmps:
        tmp = dict(zip(keys, tmps))
        if h5:
            write_report_h5(report, tmp["h5"])
        if png:
            _draw_all(report, paths, tmp)
    return targets


def render_report(report: Union[Report, str, Path], out_dir: Union[str, Path]) -> List[Path]:
    """Draw a report's PNGs (one grid per layer, one PNG per feature) into ``out_dir``.

    ``report`` is a :class:`Report` or the path of its HDF5 file: no model and no
    data are needed. Written atomically (see :func:`save_report`).
    """
    if not isinstance(report, Report):
        report = read_report_h5(report)
    return save_report(report, out_dir, h5=False, png=True)
