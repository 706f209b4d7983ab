"""Seed frames: the window of each node's output that a seed's cone keeps.

A seed at one position of a node depends on the image only inside its cone. Per node
under the seed, :func:`seed_frames` finds the window (a :class:`Frame`) its seeds keep:
the union of what the node's consumers read (:func:`window_frame` through a conv or pool,
:func:`union_frame` where paths meet), a fixed shift of the seed's position, so every
seed's window is one tensor. The graph says what each op reads
(:meth:`~deconvviz.engine.net.graph.Graph.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

__all__ = ["Frame", "window_frame", "union_frame", "seed_frames"]


@dataclass(frozen=True)
class Frame:
    """The window of one node's output that a seed's forward cone or reverse walk keeps.

    Per axis ``(a, j, n)``: a seed at position ``p`` of its own node keeps rows
    ``[a + p * j, a + p * j + n)`` of this node's output (unclipped: the window may
    run into the padding). ``j == 0`` is the whole map (``a == 0``, ``n`` the size),
    the same for every seed. Two frames of one node differ by a shift that does
    not depend on the seed, which is what lets every seed's window be one tensor.
    """

    a: Tuple[int, int]
    j: Tuple[int, int]
    n: Tuple[int, int]

    @property
    def whole(self) -> bool:
        return self.j == (0, 0)

    def origin(self, position):
        """Per-seed top-left ``(S, 2)`` of the window, in this node's output coordinates."""
        pos = position.to(torch.int64)
        return torch.stack(
            [self.a[0] + pos[:, 0] * self.j[0], self.a[1] + pos[:, 1] * self.j[1]], dim=1
        )

    def area(self) -> int:
        return self.n[0] * self.n[1]


def _per_axis(value: Callable[[int], int]) -> Tuple[int, int]:
    return value(0), value(1)


def window_frame(out: Frame, kernel, stride, padding, dilation) -> Frame:
    """The input window a conv or pool reads for an output window ``out``."""
    return Frame(
        _per_axis(lambda i: out.a[i] * stride[i] - padding[i]),
        _per_axis(lambda i: out.j[i] * stride[i]),
        _per_axis(lambda i: (out.n[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1),
    )


def union_frame(a: Frame, b: Frame) -> Optional[Frame]:
    """The smallest frame holding both (``None`` when they move differently with the seed)."""
    if a.j != b.j:
        return None
    lo = _per_axis(lambda i: min(a.a[i], b.a[i]))
    hi = _per_axis(lambda i: max(a.a[i] + a.n[i], b.a[i] + b.n[i]))
    return Frame(lo, a.j, _per_axis(lambda i: hi[i] - lo[i]))


def seed_frames(
    order: Sequence,
    seed: str,
    reach: Callable[[object, Frame], Optional[list]],
    whole: bool,
    block: Tuple[int, int] = (1, 1),
    hybrid: bool = False,
    spatial: Callable[[Any], Optional[Tuple[int, int]]] = lambda n: (
        tuple(n.shape[1:]) if n.shape is not None and len(n.shape) == 3 else None
    ),
) -> Optional[Dict[str, Frame]]:
    """Frames of every node under ``seed`` (``order``: its ancestors in execution order).

    ``whole``: every spatial node's whole map. Otherwise each seed's cone: the seed
    node keeps its one position and every input keeps the union of what its
    consumers read (``reach(node, frame)`` -> ``[(input, frame), ...]``, or
    ``None`` where an op's window is not a fixed shift of the seed's position:
    flatten, linear, a spatial concatenation, an uneven adaptive pool). ``None``
    when the cone does not exist; the caller then takes the whole image. ``spatial(node)``:
    its map's ``(rows, columns)`` (a channels-last map's are its first two dims, a channel
    shuffle's ``(g, C/g, H, W)`` its last two), None where it has no map a frame can cut.

    ``hybrid`` (a walk over whole recordings): a node whose window is at least as large
    as its map keeps the whole map instead, and so does everything below it (a window's
    signal is added into a whole map at each seed's place; the reverse never cuts a
    whole map into windows): never more work than the whole maps, and less than the
    cone where its windows outgrow the maps.
    """
    if whole:
        maps = {n.name: spatial(n) for n in order}
        return {name: Frame((0, 0), (0, 0), m) for name, m in maps.items() if m is not None}
    by_name = {n.name: n for n in order}
    if by_name[seed].shape is None or len(by_name[seed].shape) != 3:
        return None
    frames: Dict[str, Frame] = {seed: Frame((0, 0), (1, 1), (int(block[0]), int(block[1])))}
    made_whole: set = set()
    for n in reversed(order):
        f = frames.get(n.name)
        if f is None:
            continue
        if hybrid and n.name != seed:
            size = spatial(n)
            assert size is not None  # a node with a frame has a map
            if n.name in made_whole or f.n[0] * f.n[1] >= size[0] * size[1]:
                f = frames[n.name] = Frame((0, 0), (0, 0), size)
        if n.op == "input":
            continue
        needs = reach(n, f)
        if needs is None:
            return None
        for x, fx_ in needs:
            if spatial(by_name[x]) is None:
                return None
            if hybrid and (f.whole or x in made_whole):
                made_whole.add(x)
                frames[x] = fx_
                continue
            merged = fx_ if x not in frames else union_frame(frames[x], fx_)
            if merged is None and hybrid:
                made_whole.add(x)
                merged = fx_
            if merged is None:
                return None
            frames[x] = merged
    return frames
