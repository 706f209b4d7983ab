"""One reverse pass's state: the graph, the recording, each seed's row, position and frames.

:class:`Walk` is what every op's transpose (:mod:`.transposes`) reads while
:func:`~.reverse.reverse_walk` sends a signal down the graph: the recorded switches,
slopes and held values of each seed's row, cut to the frame (whole map or the seed's
window) the walk keeps of each node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..net.geometry.frames import Frame
from ..net.graph import Graph, GraphNode
from ..net.run import op_weight
from .record import GraphRecording, cut_record

__all__ = ["Walk", "Sent", "Transpose"]


@dataclass
class Walk:
    """One reverse pass: the graph, the recording, seed ``s``'s recorded row ``rows[s]``,
    its position ``position[s]`` on the seed node, and every node's ``frames``."""

    graph: Graph
    rec: GraphRecording
    rows: torch.Tensor
    position: torch.Tensor
    frames: Dict[str, Frame]
    rule: str
    unpool: str
    _origins: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: convs whose batch norm's scale goes back inside their transposed conv (see _batchnorm)
    folded: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: each conv's weight as its transpose uses it (batch norm folded in), shared by the walks
    #: of one projection's chunks
    weights: Dict[Tuple[str, torch.dtype], torch.Tensor] = field(default_factory=dict, repr=False)
    #: whether the signal the current op goes back through is the walk's own to overwrite
    mine: bool = False

    def part(self, seeds: slice) -> "Walk":
        """The same walk for a group of its seeds (weights and folds shared)."""
        return Walk(
            self.graph,
            self.rec,
            self.rows[seeds],
            self.position[seeds],
            self.frames,
            self.rule,
            self.unpool,
            folded=self.folded,
            weights=self.weights,
        )

    def conv_weight(self, node: GraphNode, dtype: torch.dtype) -> torch.Tensor:
        key = (node.name, dtype)
        if key not in self.weights:
            weight = op_weight(node.spec, self.graph.model).to(dtype)
            if node.name in self.folded:
                weight = weight * self.folded[node.name].to(dtype).view(-1, 1, 1, 1)
            self.weights[key] = weight
        return self.weights[key]

    def frame(self, name: str) -> Optional[Frame]:
        return self.frames.get(name)

    def origin(self, name: str) -> torch.Tensor:
        if name not in self._origins:
            self._origins[name] = self.frames[name].origin(self.position)
        return self._origins[name]

    def record(self, records: Dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """A record of node ``name``, one row per seed, on the walk's frame of it."""
        f = self.frame(name)
        if f is not None and not f.whole and self.graph.channels_last(name):
            # (R, H, W, C): cut its rows and columns as those of an (R, C, H, W) view
            t = {name: records[name].permute(0, 3, 1, 2)}
            return cut_record(self.rec, t, name, self.rows, f, self.origin(name)).permute(
                0, 2, 3, 1
            )
        return cut_record(
            self.rec, records, name, self.rows, f, None if f is None else self.origin(name)
        )

    def window(self, name: str) -> Optional[Frame]:
        """Node ``name``'s frame where the walk is inside seeds' cones, else None."""
        f = self.frame(name)
        return None if f is None or f.whole else f

    def shape(self, name: str, signal: torch.Tensor) -> Tuple[int, ...]:
        return (signal.shape[0],) + tuple(self.rec.shapes[name])

    def extent(self, name: str) -> Tuple[int, int]:
        return tuple(self.rec.shapes[name][-2:])


Sent = List[Tuple[Optional[str], torch.Tensor, Optional[Frame]]]
Transpose = Callable[[GraphNode, torch.Tensor, Walk], Sent]
