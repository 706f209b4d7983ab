"""The recorded forward pass on a graph, and the whole-image recording.

:class:`GraphRecording` is what a recorded forward pass keeps for the reverse walk: the
seed nodes' outputs, every max pool's switches, every nonlinearity's slope where the rule
needs it, every gate's value and normalisation's factor. :func:`record_whole` records
whole images, as far as the seed nodes need; a seed's cone only is recorded by
:func:`~.cone.record_cone`, into the same type (each record keeping its frame, so the
reverse walk reads both alike through :func:`cut_record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import fx

from ..net.execute import execute
from ..net.geometry.frames import Frame
from ..net.graph import Graph, GraphNode, eval_mode
from ..net.run import fetch_attr, run_node
from .windows import cut_per_seed

__all__ = [
    "SIGNAL_BYTES",
    "GraphRecording",
    "record_whole",
    "cut_record",
    "channels_last",
    "constant_value",
    "file_kept",
    "images_per_pass",
    "join_rows",
]


#: The largest signal (bytes) a pass holds at once: a whole-image recording runs as many
#: images at a time as keep its widest map under it; where a reverse pass's signals grow
#: past it (going down towards the image, maps grow), the walk goes on in groups of fewer
#: seeds. The allocator serves blocks above 32 MiB with fresh memory from the kernel
#: (glibc's ceiling for reusing freed blocks) and every new one costs page faults, the
#: system time that otherwise doubles a reverse pass over whole maps (and a whole
#: EfficientNet-B0 forward of 15 images); above the split, many seeds in one batch keep the
#: deep layers' products large (a small matrix product costs twice as much per row).
SIGNAL_BYTES = 16 * 2**20


@dataclass
class GraphRecording:
    """What one recorded forward pass kept, for the nodes below its seed nodes.

    ``outputs[name]``: the seed nodes' outputs ``(R, ...)``; ``switches[name]``:
    every max pool's flat argmax indices into its input plane; ``masks[name]``:
    every elementwise nonlinearity's local slope ``φ'(x)`` when the rule needs it
    (ReLU's is the bool ``0 < y``, ReLU6's ``0 < y < 6``); ``held[name]``: every
    gate's value and every normalisation's factor (statistics held), which all rules
    need; ``shapes[name]``: each node's output shape for one image; ``batch``: R rows.
    A whole recording has a row per image and ``frames`` None; a cone recording
    a row per seed, each record holding ``frames[name]`` at the seeds'
    ``position`` (of its seed node).
    """

    outputs: Dict[str, torch.Tensor]
    switches: Dict[str, torch.Tensor]
    masks: Dict[str, torch.Tensor]
    shapes: Dict[str, Tuple[int, ...]]
    batch: int
    frames: Optional[Dict[str, Frame]] = None
    position: Optional[torch.Tensor] = None
    held: Dict[str, torch.Tensor] = field(default_factory=dict)
    _origins: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def origin(self, name: str) -> Optional[torch.Tensor]:
        """Top-left ``(R, 2)`` of each row's record of ``name``; None for whole maps."""
        if self.frames is None or name not in self.frames:
            return None
        if name not in self._origins:
            self._origins[name] = self.frames[name].origin(self.position)
        return self._origins[name]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    # On the CPU convolutions and pools run several times faster channels-last.
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def cut_record(
    rec: GraphRecording,
    records: Dict[str, torch.Tensor],
    name: str,
    rows: torch.Tensor,
    frame: Optional[Frame],
    origin: Optional[torch.Tensor],
) -> torch.Tensor:
    """Record ``records[name]`` of rows ``rows`` inside each seed's window ``frame``
    (top-left ``origin``): the record itself where the frames agree."""
    t = records[name]
    kept = rec.frames.get(name) if rec.frames is not None else None
    if frame is None or (kept is None and frame.whole) or kept == frame:
        rows = rows.to(t.device)
        if rows.numel() == t.shape[0] and bool(
            (rows == torch.arange(rows.numel(), device=t.device)).all()
        ):
            return t  # every row, in order: no copy (records are never written to)
        # Indexing, not index_select: on the CPU index_select of a 4-d map is several
        # times slower (3-16x measured on torch 2.14), channels-last or not.
        return t[rows]
    here = rec.origin(name)
    offset = origin if here is None else origin - here.index_select(0, rows.to(here.device))
    return cut_per_seed(t, rows, offset, frame.n)


def file_kept(rec: GraphRecording, node: GraphNode, kept: Optional[torch.Tensor]) -> None:
    """File what :func:`~deconvviz.engine.net.run.run_recorded` kept for ``node``'s rule."""
    if kept is None:
        return
    if node.op in ("maxpool", "adaptive_maxpool"):
        rec.switches[node.name] = kept
    elif node.op in ("gate", "norm"):
        rec.held[node.name] = kept
    else:
        rec.masks[node.name] = kept


def record_whole(
    graph: Graph, images: torch.Tensor, targets: Sequence[str], masks: bool = True
) -> GraphRecording:
    """One forward pass of ``images`` ``(B, C, H, W)``, only as far as ``targets`` need, in
    passes of as many images as keep the widest map under :data:`SIGNAL_BYTES`.

    Keeps the outputs of ``targets``, every max pool's switches, gate's value and
    normalisation's factor below them and, with ``masks``, every nonlinearity's slope
    (ReLU's mask). No hook is registered: the graph runs node
    by node, in-place ops out of place, in eval mode and without gradients; the
    model's train/eval flags are restored on exit, also when the forward raises.
    """
    lower = graph.ancestors(targets)
    below = {n.name for n in lower}
    rec = GraphRecording({}, {}, {}, {n: graph.node(n).shape for n in below}, int(images.shape[0]))
    step = images_per_pass(lower, images.element_size())
    kept: Dict[str, List[torch.Tensor]] = {}
    outputs: Dict[str, List[torch.Tensor]] = {}

    def visit(node: GraphNode, value: torch.Tensor, k: Optional[torch.Tensor]) -> None:
        if node.name in below and k is not None:
            kept.setdefault(node.name, []).append(k)

    folds: Dict[torch.nn.Module, tuple] = {}  # batch norms folded into convs, made once
    with torch.no_grad(), eval_mode(graph.model):
        for c0 in range(0, int(images.shape[0]), step):
            x = channels_last(images[c0 : c0 + step])
            out = execute(graph, x, targets, visit, switches=True, slopes=masks, folds=folds)
            for name, v in out.items():
                outputs.setdefault(name, []).append(v)
    for n in lower:
        if n.name in kept:
            file_kept(rec, n, join_rows(kept[n.name]))
    rec.outputs.update({name: join_rows(v) for name, v in outputs.items()})
    return rec


def images_per_pass(nodes: Sequence[GraphNode], elem: int, max_bytes: Optional[int] = None) -> int:
    """How many images a whole-image pass over ``nodes`` runs at once: as many as keep its
    widest map under :data:`SIGNAL_BYTES` and four of them under ``max_bytes`` (at least
    one)."""
    widest = elem * max((int(torch.Size(n.shape).numel()) for n in nodes if n.shape), default=1)
    step = SIGNAL_BYTES // widest
    return max(1, step if max_bytes is None else min(step, int(max_bytes) // (4 * widest)))


def join_rows(parts: List[torch.Tensor]) -> torch.Tensor:
    """The chunks' rows in one tensor (the one chunk itself, uncopied; ``cat`` keeps
    channels-last)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def constant_value(graph: Graph, node: fx.Node):
    """The value of a node that carries no image signal (a parameter, a reshape of one)."""
    if node.op == "get_attr":
        return fetch_attr(graph.model, node.target)
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: constant_value(graph, a))
    return run_node(node, graph.node_of(node).spec, graph.model, args, kwargs)
