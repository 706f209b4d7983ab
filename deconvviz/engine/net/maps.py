"""Where each node of a traced graph holds its map, and what a window of it reads: cones.

:class:`Maps` is the part of :class:`~deconvviz.engine.net.graph.Graph` that follows a
seed's window down the graph: a conv's or pool's window (:meth:`Maps.window_params`),
where each node's rows and columns are (channels-last blocks, channel shuffles:
:meth:`Maps.channels_last`, :meth:`Maps.regrouped`, :meth:`Maps.map_size`), what a
window of each op's output reads of its inputs, and so the frames of a seed's cone
(:meth:`Maps.frames`, through :func:`~.geometry.frames.seed_frames`); and which nodes hold
a value of the whole image, which no cone can cut (:meth:`Maps.holds_whole_image`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Tuple

import torch
from torch import fx, nn

from .geometry.frames import Frame, seed_frames, window_frame
from .nodes import GraphNode
from .ops import REACH, WHOLE_IMAGE_OPS
from .run import op_weight

__all__ = ["Maps"]


class Maps:
    """The graph's cones, mixed into :class:`~deconvviz.engine.net.graph.Graph` (which
    sets the attributes below when it analyses a model)."""

    _by_name: Dict[str, GraphNode]
    _names: Dict[fx.Node, str]
    _depends: Dict[fx.Node, bool]
    _moved: Dict[str, Optional[Tuple[int, int]]]
    _frames: Dict[tuple, Optional[Dict[str, Frame]]]

    if TYPE_CHECKING:  # the graph's own

        @property
        def model(self) -> nn.Module: ...

        def ancestors(self, names: Iterable[str]) -> List[GraphNode]: ...

    def _kernel(self, node: GraphNode) -> Tuple[int, int]:
        return node.params["kernel"] or tuple(op_weight(node.spec, self.model).shape[-2:])

    def window_params(self, node: GraphNode):
        """``(kernel, stride, padding, dilation)`` pairs of a conv or pool (an adaptive pool
        whose input is a multiple of its output is a pool of that window), else None."""
        if REACH.get(node.op) == "window":
            p = node.params
            return self._kernel(node), p["stride"], p["padding"], p["dilation"]
        if REACH.get(node.op) == "adaptive":
            n_in = self._by_name[node.inputs[0]].shape[1:]
            n_out = node.shape[1:]
            if len(n_in) == 2 and all(i % o == 0 for i, o in zip(n_in, n_out)):
                k = tuple(i // o for i, o in zip(n_in, n_out))
                return k, k, (0, 0), (1, 1)
        return None

    def channels_last(self, name: str) -> bool:
        """Whether node ``name`` holds its map as ``(H, W, C)`` per image (inside a ConvNeXt
        block, between its permutes): its records are cut to a window on dims 1 and 2."""
        return self._moved.get(name) == (0, 1) and len(self._by_name[name].shape) == 3

    def regrouped(self, name: str) -> bool:
        """Whether node ``name`` holds its map as the last two dims of a per-image shape
        ``(..., H, W)`` of more than three dims (a channel shuffle's ``(g, C/g, H, W)``
        between its views): its channels are regrouped, each position keeps its place."""
        shape = self._by_name[name].shape
        return (
            shape is not None
            and len(shape) > 3
            and self._moved.get(name) == (len(shape) - 2, len(shape) - 1)
        )

    def map_size(self, name: str, frame: Optional[Frame] = None) -> Tuple[int, int]:
        """``(channels, positions)`` of one image's output of node ``name`` on ``frame`` (the
        whole map by default): a channels-last ``(H, W, C)`` map's channels are its last
        dim, a regrouped ``(g, C/g, H, W)`` map's all but its last two (:meth:`regrouped`);
        a map without rows and columns is one position."""
        node = self._by_name[name]
        numel = int(torch.Size(node.shape).numel())
        rows = self._spatial(node)
        channels = numel // (rows[0] * rows[1]) if rows is not None else node.shape[0]
        if frame is None or frame.whole:
            return channels, numel // max(channels, 1)
        return channels, frame.area()

    def _spatial(self, node: GraphNode) -> Optional[Tuple[int, int]]:
        """The ``(rows, columns)`` of ``node``'s map, where a frame can cut it; else None."""
        if self.channels_last(node.name):
            return tuple(node.shape[:2])
        if node.spatial or self.regrouped(node.name):
            return tuple(node.shape[-2:])
        return None

    def _keeps_places(self, node: GraphNode, x: str) -> bool:
        """Whether ``node`` (a reshape, a permute or a piece of a chunk) only regroups or
        cuts the channels of its input ``x``: both hold their maps as their last two dims,
        of one size, and a piece is cut along another dim (channel shuffle:
        ``view(B, g, C/g, H, W)``, ``transpose(1, 2)``, ``view(B, C, H, W)``, ``chunk(2,
        dim=1)``). Row-major, each position's channels then stay at that position."""
        below = self._by_name[x]
        trailing = [
            n.spatial and n.name not in self._moved or self.regrouped(n.name) for n in (node, below)
        ]
        if not all(trailing) or tuple(node.shape[-2:]) != tuple(below.shape[-2:]):
            return False
        if node.op == "narrow":
            return 0 < node.params["dim"] % (len(below.shape) + 1) < len(below.shape) - 1
        return True

    def _reach(self, node: GraphNode, frame: Frame):
        """What ``frame`` of ``node``'s output reads of each input (see ``REACH``), or None."""
        kind = REACH.get(node.op)
        ins = [x for x in node.inputs if x is not None]
        if node.op in ("reshape", "permute", "narrow") and len(ins) == 1:
            if self._keeps_places(node, ins[0]):
                return [(ins[0], frame)]
        if node.op in ("permute", "linear") and node.spatial:
            # A permute into a channels-last block and back, a Linear on its channels: the
            # same rows and columns, in other dims.
            (x,) = ins
            moves = self._moved.get(node.name, (1, 2)), self._moved.get(x, (1, 2))
            if any(m not in ((1, 2), (0, 1)) for m in moves) or not self._by_name[x].spatial:
                return None
            if node.op == "linear" and not self.channels_last(node.name):
                return None
            return [(x, frame)]
        if kind == "pointwise":
            if node.op == "cat" and node.params["dim"] % 4 != 1:
                return None
            held = node.params.get("held")  # a gate's value: held, it takes no signal
            for a in node.fx_node.all_input_nodes:
                if a is held:
                    continue
                name = self._names.get(a)
                shape = self._by_name[name].shape if name in self._by_name else None
                if name in ins and (shape is None or tuple(shape[1:]) != tuple(node.shape[1:])):
                    return None  # a broadcast signal reads other positions than its own
                if name not in ins and (
                    self._depends.get(a)
                    or (shape is not None and len(shape) >= 2 and shape[-1] * shape[-2] > 1)
                ):
                    return None  # a size read off the image, or a map that does not move
            return [(x, frame) for x in ins]
        window = self.window_params(node) if kind else None
        if window is None:
            return None
        return [(ins[0], window_frame(frame, *window))]

    def frames(
        self,
        seed: str,
        whole: bool = False,
        block: Tuple[int, int] = (1, 1),
        hybrid: bool = False,
    ) -> Optional[Dict[str, Frame]]:
        """Per node under ``seed``, the window its seeds keep (the seed's cone, the union of
        the cones of a ``block`` of positions, or with ``whole`` every map whole; ``hybrid``:
        the whole map where the cone's window is as large, see
        :func:`~.geometry.frames.seed_frames`); None where the cone does not exist (cached)."""
        key = (seed, bool(whole), tuple(block), bool(hybrid))
        if key not in self._frames:
            self._frames[key] = seed_frames(
                self.ancestors([seed]),
                seed,
                self._reach,
                whole,
                tuple(block),
                bool(hybrid),
                self._spatial,
            )
        return self._frames[key]

    def holds_whole_image(self, name: str) -> bool:
        """Whether node ``name`` holds a value that depends on the whole image: a gate's (a
        global average inside it), a normalisation's per-image statistics (GroupNorm,
        InstanceNorm, a LayerNorm over rows or columns). A LayerNorm over the channels at
        each position (torchvision's LayerNorm2d, ConvNeXt's LayerNorm on its channels-last
        block) is pointwise: its statistics are those of its own position."""
        n = self._by_name[name]
        if n.op not in WHOLE_IMAGE_OPS:
            return False
        p = n.params
        if n.op == "norm" and p["stats"] == "channels":
            return not (n.spatial and name not in self._moved)
        if n.op == "norm" and p["stats"] == "last" and p["dims"] == 1:
            return not self.channels_last(name)
        return True
