"""The report's scan (Zeiler & Fergus, Figure 2's first step) and its resumable state.

One pass over a data source keeps, for every feature of the chosen layers, the ``k``
images on which the feature fires most (:mod:`deconvviz.engine.topk`, merged across
``torchrun`` ranks by :mod:`deconvviz.engine.distributed`), and records every image's
maximum of every feature for the feature statistics (:mod:`deconvviz.engine.statistics`).
With a state folder the scan runs in segments and saves its top-k lists and maxima after
each (:func:`scan_state_path`), so ``--resume`` continues an interrupted scan to the same
result. :func:`source_for` resolves what is scanned.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..data.resolve import resolve_source
from ..data.source import ImageSource
from ..engine.deconv.deconvnet import RULES
from ..engine.distributed import Ranks, gather_topk
from ..engine.net.network import Layer, graph_of, layer_key, require_spatial, spatial
from ..engine.scan import batch_size_for, layer_infos, normalization_of, scan_topk
from ..engine.statistics import MaximaRecorder, gather_maxima
from ..engine.topk import TopK, empty_topk, finalize_topk, merge_topk
from ..errors import DeconvvizError, notice
from ..models.torchfile import TorchFileError, read_torch_file
from ..progress import Progress
from ..store.atomic import atomic_path
from ..store.statistics_h5 import MaximaState

__all__ = [
    "Scan",
    "run_scan",
    "source_for",
    "check_features",
    "scan_state_path",
    "remove_scan_state",
]


class Scan:
    """What the scan found (on the rank that writes): layers, top-k lists, kept images,
    every image's maxima (``maxima``: ``{layer: MaximaRecorder}``, all channels), the
    source's ``labels`` and ``classes`` (for the feature statistics) and the network's
    traced ``graph`` (made once for the whole run)."""

    def __init__(
        self,
        infos,
        tops,
        n,
        mean,
        std,
        world,
        k,
        features=None,
        maxima=None,
        labels=None,
        classes=0,
        graph=None,
    ):
        self.infos, self.tops, self.n = infos, tops, n
        self.graph = graph
        self.mean, self.std, self.world = mean, std, world
        self.k = k
        #: The features kept of every layer (sorted channel numbers), None: all.
        self.features = features
        self.maxima, self.labels, self.classes = maxima, labels, classes

    def selected(self) -> "Scan":
        """The scan with each layer's top-k lists cut to :attr:`features`."""
        if self.features is None:
            return self
        rows = torch.as_tensor(self.features, dtype=torch.long)
        tops = {
            L: TopK(t.activation[rows], t.image_index[rows], t.position[rows])
            for L, t in self.tops.items()
        }
        return Scan(
            self.infos,
            tops,
            self.n,
            self.mean,
            self.std,
            self.world,
            self.k,
            self.features,
            self.maxima,
            self.labels,
            self.classes,
            self.graph,
        )


def _layer_title(info) -> str:
    key = layer_key(info)
    return f"layer {key}" if isinstance(key, int) else f"node {key}"


def check_features(infos, features: Optional[Sequence[int]]) -> Optional[List[int]]:
    """``features`` sorted without repeats, after checking each is a channel of every
    layer in ``infos`` (one line naming the first that is not); None stays None (all)."""
    if features is None:
        return None
    ids = sorted({int(f) for f in features})
    if not ids:
        raise DeconvvizError("no features chosen")
    for info in infos:
        bad = [f for f in ids if not 0 <= f < info.features]
        if bad:
            raise DeconvvizError(
                f"feature {bad[0]} is out of range: {_layer_title(info)} has "
                f"{info.features} features (0..{info.features - 1})"
            )
    return ids


SCAN_STATE = ".scan-state{suffix}.pt"


def scan_state_path(out_dir: Union[str, Path], rank: int = 0, world: int = 1) -> Path:
    """Where a report's resumable scan state lives (one file per rank under torchrun)."""
    return Path(out_dir) / SCAN_STATE.format(suffix="" if world <= 1 else f".rank{rank}of{world}")


def remove_scan_state(out_dir: Path) -> None:
    """Delete the saved scan state of every rank (its top-k lists and maxima) once the
    report is complete: nothing is left to resume."""
    for saved in out_dir.glob(SCAN_STATE.format(suffix="*")):
        saved.unlink()
    for saved in out_dir.glob(MaximaState.PATTERN.format(stem=SCAN_STATE.format(suffix="*")[:-3])):
        saved.unlink()


class _ScanState:
    """The top-k lists so far and where the scan goes on, saved atomically every few
    batches so that ``--resume`` continues an interrupted scan to the same result."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity

    def load(self, k_features: Dict[Layer, int], k: int):
        """``(tops, next image)`` from the saved file, checked against this run."""
        try:
            state = read_torch_file(self.path, "a deconvviz scan state")
            saved = state["identity"]
            tops = {
                int(L) if L.isdigit() else L: TopK(t["activation"], t["image_index"], t["position"])
                for L, t in state["tops"].items()
            }
            start = int(state["next"])
        except TorchFileError as exc:
            raise DeconvvizError(
                f"--resume: cannot read the saved scan state {self.path} "
                f"({exc.why}); remove it or run without --resume"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any damage: one line
            raise DeconvvizError(
                f"--resume: cannot read the saved scan state {self.path} "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                "; remove it or run without --resume"
            ) from None
        differ = [key for key in self.identity if saved.get(key) != self.identity[key]]
        if differ:
            raise DeconvvizError(
                f"--resume: the saved scan state {self.path} is from another "
                f"run (its {', '.join(differ)} differ); remove it or run "
                "without --resume"
            )
        for L, F_ in k_features.items():
            if L not in tops or tuple(tops[L].activation.shape) != (F_, k):
                raise DeconvvizError(
                    f"--resume: the saved scan state {self.path} is damaged "
                    f"(layer {L}); remove it or run without --resume"
                )
        return tops, start

    def save(self, tops: Dict[Layer, TopK], next_image: int) -> None:
        state = {
            "identity": self.identity,
            "next": int(next_image),
            "tops": {
                str(L): {
                    "activation": t.activation,
                    "image_index": t.image_index,
                    "position": t.position,
                }
                for L, t in tops.items()
            },
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def run_scan(
    model,
    source,
    layers,
    k,
    *,
    batch_size,
    device,
    rule,
    progress,
    limit,
    ranks,
    timings,
    state_dir: Optional[Path] = None,
    resume: bool = False,
    save_every: int = 20,
    features: Optional[Sequence[int]] = None,
) -> Optional[Scan]:
    """Scan ``source`` (each rank its share, merged exactly); None on ranks that do not write.

    With ``state_dir`` the scan runs in segments of ``save_every`` batches (per rank)
    and saves its state after each (:func:`scan_state_path`); ``resume`` first
    loads a saved state of the same run. Segments merge exactly (the merge is
    associative and tie-stable), so the result equals one uninterrupted scan.
    """
    if rule not in RULES:
        raise DeconvvizError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    mean, std = normalization_of(model)
    n = len(source) if limit is None else min(len(source), int(limit))
    if n < 1:
        raise DeconvvizError(f"{source.description} has no images to scan")
    graph = graph_of(model, source.image_size)  # traced once for the whole run
    infos = layer_infos(model, layers, source.image_size, graph)
    if layers:
        for info in infos:
            require_spatial(graph, info)
    else:  # by default, the nodes that have image patches
        infos = [i for i in infos if spatial(graph, i)]
    features = check_features(infos, features)
    if k > n:
        notice(f"top {k} is more than the {n} images scanned; each feature keeps all {n}")
        k = n
    if batch_size is None:
        batch_size = batch_size_for(model, infos, source.image_size, graph=graph)
    ranks = ranks if ranks is not None else Ranks(0, 1, str(device))
    rank, world = ranks.rank, ranks.world
    t0 = time.perf_counter()
    # Each rank's share of images, for its progress bar (batches are dealt round-robin).
    mine = sum(
        min(n, s + batch_size) - s
        for b, s in enumerate(range(0, n, batch_size))
        if b % world == rank
    )
    with ranks.stage("the scan"):
        state = None
        if state_dir is not None:
            meta = getattr(model, "meta", None) or {}
            state = _ScanState(
                scan_state_path(state_dir, rank, world),
                {
                    "checkpoint_sha256": str(meta.get("sha256", "")),
                    "data_fingerprint": source.fingerprint,
                    "layers": [str(layer_key(i)) for i in infos],
                    "top_k": int(k),
                    "batch_size": int(batch_size),
                    "num_images": int(n),
                    "world_size": int(world),
                },
            )
        tops = {layer_key(i): empty_topk(i.features, k) for i in infos}
        # Feature statistics (issue 20): every image's maxima, recorded in the same pass
        # and kept beside the scan state, so a resumed report computes the same numbers.
        maxima = {layer_key(i): MaximaRecorder(i.features, n) for i in infos}
        kept = None if state is None else MaximaState(state.path.with_suffix(""), len(infos))
        start = 0
        if state is not None and kept is not None and resume:  # made together
            tops, start = state.load({layer_key(i): i.features for i in infos}, k)
            kept.load([m.values.numpy() for m in maxima.values()])
            if start < n:
                notice(f"resuming the scan at image {start} of {n} from {state.path}")
        done = sum(
            min(n, s + batch_size) - s
            for b, s in enumerate(range(0, start, batch_size))
            if b % world == rank
        )
        # Segments of whole rounds of batches keep the round-robin dealing of one scan.
        step = n if state is None else max(1, int(save_every)) * batch_size * world
        with Progress(
            mine,
            "scan" if world == 1 else f"scan (rank {rank}/{world})",
            enabled=progress and rank == 0,
            initial=done,
        ) as bar:
            for s0 in range(start, n, step):
                part = scan_topk(
                    model,
                    source,
                    [layer_key(i) for i in infos],
                    k,
                    batch_size=batch_size,
                    device=device,
                    progress=bar,
                    shard=(rank, world),
                    start=s0,
                    stop=min(n, s0 + step),
                    mean=mean,
                    std=std,
                    maxima=maxima,
                    graph=graph,
                )
                tops = (
                    part
                    if s0 == 0 and state is None
                    else {L: merge_topk(tops[L], part[L], k) for L in tops}
                )
                if state is not None and kept is not None:
                    # The maxima first: the state says where they end.
                    kept.save([m.values.numpy() for m in maxima.values()], s0, min(n, s0 + step))
                    state.save(tops, min(n, s0 + step))
    if world > 1:
        tops = gather_topk(tops, device)
        for rec in maxima.values():
            rec.values = gather_maxima(rec.values, device)
        if rank != 0:
            return None
    tops = {L: finalize_topk(t, n) for L, t in tops.items()}
    timings["scan"] = time.perf_counter() - t0
    return Scan(
        infos,
        tops,
        n,
        mean,
        std,
        world,
        k,
        features,
        maxima,
        source.labels[:n],
        len(source.class_names),
        graph,
    ).selected()


def source_for(
    model: nn.Module,
    source: Union[ImageSource, str, Path, None],
    limit: Optional[int],
    split: Optional[str] = "test",
) -> ImageSource:
    """An :class:`ImageSource` as given (or the source of a
    :func:`deconvviz.load_data` dataset), or resolved from anything ``--data`` takes
    (``"builtin"``, a folder, an image file; its ``split``), preprocessed the way
    ``model`` expects and, for image folders, decoding only the first ``limit`` files."""
    if isinstance(source, ImageSource):
        return source
    inner = getattr(source, "source", None)
    if isinstance(inner, ImageSource):
        return inner
    if source is not None and not isinstance(source, (str, Path)):
        raise DeconvvizError(
            f"source must be an ImageSource or a data-source string like "
            f"'builtin' or a folder; got {type(source).__name__}"
        )
    from ..data.preprocess import Preprocessing
    from ..models.checkpoint import read_checkpoint

    meta = getattr(model, "meta", None) or read_checkpoint(None)
    return resolve_source(
        None if source is None else str(source),
        split=split,
        limit=limit,
        **Preprocessing.from_meta(meta).source_kwargs(),
    )
