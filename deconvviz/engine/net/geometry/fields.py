"""Receptive fields on a graph: the input box of every output position of every node.

Per spatial axis, a node's geometry holds two things:

* the **exact box** of each output index ``i``: the input pixels ``[lo[i], hi[i])``
  that can reach it, through every path (a residual add or a concatenation takes
  the union), clipped at the image border. It is the bounding box of the support
  of the unit's gradient when nothing cancels;
* the **affine field** ``(start, jump, size)`` where one exists, as in
  :class:`~deconvviz.engine.net.layers.LayerInfo`: index ``i`` sees
  ``[start + i * jump, start + i * jump + size)`` before clipping (padding
  included). Adaptive pools with uneven windows, or merges of paths with
  different strides, have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

__all__ = [
    "Geometry",
    "input_geometry",
    "window_geometry",
    "adaptive_geometry",
    "union_geometry",
    "concat_geometry",
    "hull_geometry",
    "receptive_fields",
]

_EMPTY = (1 << 62, -(1 << 62))  # (lo, hi) of an index no input pixel reaches

Axis = Tuple[Tuple[int, ...], Tuple[int, ...], Optional[Tuple[int, int, int]]]


@dataclass(frozen=True)
class Geometry:
    """Receptive fields of one node's output positions, per axis (rows, then columns).

    ``lo[a][i]``/``hi[a][i]``: exact clipped box of index ``i`` on axis ``a``
    (``lo >= hi`` where nothing reaches it); ``affine[a]``: ``(start, jump, size)``
    or ``None`` (see the module docstring).
    """

    lo: Tuple[Tuple[int, ...], Tuple[int, ...]]
    hi: Tuple[Tuple[int, ...], Tuple[int, ...]]
    affine: Tuple[Optional[Tuple[int, int, int]], Optional[Tuple[int, int, int]]]

    @property
    def size(self) -> Tuple[int, int]:
        return len(self.lo[0]), len(self.lo[1])

    def box(self, y: int, x: int) -> Tuple[int, int, int, int]:
        """Exact input box ``(y0, x0, y1, x1)`` of output position ``(y, x)`` (end exclusive)."""
        y0, y1 = self.lo[0][y], self.hi[0][y]
        x0, x1 = self.lo[1][x], self.hi[1][x]
        if y0 >= y1 or x0 >= x1:
            return 0, 0, 0, 0
        return y0, x0, y1, x1

    def hull(self) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """Per axis, the ``(lo, hi)`` covering every position's box."""
        (lo0, lo1), (hi0, hi1) = self.lo, self.hi
        return (min(lo0), max(hi0)), (min(lo1), max(hi1))


def _axes(lo: Sequence[Sequence[int]], hi: Sequence[Sequence[int]], affine: Sequence) -> Geometry:
    return Geometry(
        (tuple(lo[0]), tuple(lo[1])), (tuple(hi[0]), tuple(hi[1])), (affine[0], affine[1])
    )


def input_geometry(size: Tuple[int, int]) -> Geometry:
    """The image itself: pixel ``i`` sees ``[i, i + 1)``."""
    return _axes([range(n) for n in size], [range(1, n + 1) for n in size], [(0, 1, 1), (0, 1, 1)])


def _window_axis(lo, hi, aff, n_out, k, s, p, d):
    n_in = len(lo)
    out_lo, out_hi = [], []
    for i in range(n_out):
        taps = [i * s - p + t * d for t in range(k)]
        taps = [j for j in taps if 0 <= j < n_in]
        out_lo.append(min((lo[j] for j in taps), default=_EMPTY[0]))
        out_hi.append(max((hi[j] for j in taps), default=_EMPTY[1]))
    new_aff = None
    if aff is not None:
        start, jump, size = aff
        new_aff = (start - p * jump, jump * s, size + d * (k - 1) * jump)
    return out_lo, out_hi, new_aff


def window_geometry(
    parent: Geometry, out_size: Tuple[int, int], kernel, stride, padding, dilation
) -> Geometry:
    """A conv or pool: output ``i`` sees input taps ``i * stride - padding + t * dilation``."""
    axes = [
        _window_axis(
            parent.lo[a],
            parent.hi[a],
            parent.affine[a],
            out_size[a],
            kernel[a],
            stride[a],
            padding[a],
            dilation[a],
        )
        for a in range(2)
    ]
    return _axes(*zip(*axes))


def adaptive_geometry(parent: Geometry, out_size: Tuple[int, int]) -> Geometry:
    """An adaptive pool: output ``i`` of ``n`` sees ``[floor(i*N/n), ceil((i+1)*N/n))``."""
    axes = []
    for a in range(2):
        n_in, n = len(parent.lo[a]), out_size[a]
        if n_in % n == 0:
            k = n_in // n
            axes.append(_window_axis(parent.lo[a], parent.hi[a], parent.affine[a], n, k, k, 0, 1))
            continue
        lo, hi = [], []
        for i in range(n):
            a0, a1 = (i * n_in) // n, -((-(i + 1) * n_in) // n)
            lo.append(min(parent.lo[a][a0:a1]))
            hi.append(max(parent.hi[a][a0:a1]))
        axes.append((lo, hi, None))
    return _axes(*zip(*axes))


def union_geometry(parents: Sequence[Geometry], out_size: Tuple[int, int]) -> Geometry:
    """An elementwise merge (add): each position's box is the union over the inputs.

    An input of size 1 on an axis is broadcast. The affine field survives when
    every input has one with the same jump.
    """
    axes = []
    for a in range(2):
        n = out_size[a]
        lo, hi = [], []
        for i in range(n):
            lo.append(min(g.lo[a][i if len(g.lo[a]) == n else 0] for g in parents))
            hi.append(max(g.hi[a][i if len(g.hi[a]) == n else 0] for g in parents))
        affs = [g.affine[a] for g in parents]
        known = [f for f in affs if f is not None]
        aff = None
        if (
            len(known) == len(affs)
            and len({f[1] for f in known}) == 1
            and all(len(g.lo[a]) == n for g in parents)
        ):
            start = min(f[0] for f in known)
            aff = (start, known[0][1], max(f[0] + f[2] for f in known) - start)
        axes.append((lo, hi, aff))
    return _axes(*zip(*axes))


def concat_geometry(parents: Sequence[Geometry], axis: int) -> Geometry:
    """A concatenation along spatial ``axis`` (0 rows, 1 columns): boxes are stacked on it."""
    other = 1 - axis
    n = len(parents[0].lo[other])
    merged = union_geometry(parents, (n, n))  # only its ``other`` axis is used
    stacked = (
        [v for g in parents for v in g.lo[axis]],
        [v for g in parents for v in g.hi[axis]],
        None,
    )
    kept = (merged.lo[other], merged.hi[other], merged.affine[other])
    return _axes(*zip(*((stacked, kept) if axis == 0 else (kept, stacked))))


def hull_geometry(parents: Sequence[Geometry], out_size: Tuple[int, int]) -> Geometry:
    """Any other op (flatten, linear, mean, ...): every position sees every input's every box."""
    axes = []
    for a in range(2):
        lo = min(min(g.lo[a]) for g in parents)
        hi = max(max(g.hi[a]) for g in parents)
        n = out_size[a]
        axes.append(([lo] * n, [hi] * n, (lo, 1, hi - lo) if n == 1 and hi > lo else None))
    return _axes(*zip(*axes))


_POINTWISE = (
    "relu",
    "relu6",
    "nonlinear",
    "gate",
    "norm",
    "batchnorm",
    "dropout",
    "identity",
    "scale",
    "add",
    "cat",
    "reshape",
    "narrow",
    "permute",
    "linear",
)


def _spatial_axes(
    n, parent_axes: Optional[Tuple[int, int]], parent_rank: int
) -> Optional[Tuple[int, int]]:
    """Where a node's rows and columns are in its per-image shape, from its first input's
    (a permute or a reshape moves them: ConvNeXt's channels-last blocks, channel shuffle);
    None where they are mixed with other dims (a flatten)."""
    if parent_axes is None:
        return None
    rank = len(n.shape)
    if n.op == "permute":
        p = n.params
        if "dims" in p:
            dims = [d % (rank + 1) for d in p["dims"]]
        else:
            dims = list(range(rank + 1))
            d0, d1 = p["dim0"] % (rank + 1), p["dim1"] % (rank + 1)
            dims[d0], dims[d1] = dims[d1], dims[d0]
        if dims[0] != 0:
            return None
        per_image = [d - 1 for d in dims[1:]]
        if max(parent_axes) >= len(per_image):
            return None
        return per_image.index(parent_axes[0]), per_image.index(parent_axes[1])
    if n.op == "reshape":
        # A reshape that keeps the map as the last two dims (channel shuffle's view).
        if parent_axes == (parent_rank - 2, parent_rank - 1) and rank >= 3:
            return rank - 2, rank - 1
        return None
    if n.op == "linear" and rank - 1 in parent_axes:
        return None
    return parent_axes if max(parent_axes) < rank else None


def receptive_fields(
    nodes: Sequence,
    input_size: Tuple[int, int],
    kernel: Callable[[object], Tuple[int, int]],
    moved: Optional[dict] = None,
) -> Dict[str, Geometry]:
    """The :class:`Geometry` of every node with a tensor output.

    ``nodes``: a graph's :class:`~deconvviz.engine.net.graph.GraphNode` s in execution
    order; ``kernel(node)``: a conv's or pool's kernel size. A position's box is where
    the gradient of that position reaches the image with every gate and normalisation
    statistic held (the deconvnet's rules): an elementwise op, a gate or a norm keeps
    each position's box; a permute or a reshape that keeps the map moves it with its
    dims (channels-last blocks, channel shuffle); a node whose map is gone (a
    flatten, a ``(C,)`` output) is one position whose box covers everything its inputs
    see. ``moved`` (a dict, filled in): the nodes whose map is not in the last two dims of
    ``(C, H, W)`` (a channels-last ``(H, W, C)`` block, a 5-d channel shuffle), with where
    their rows and columns are (None where they are mixed up).
    """
    geo: Dict[str, Geometry] = {}
    axes: Dict[str, Optional[Tuple[int, int]]] = {}
    rank: Dict[str, int] = {}
    for n in nodes:
        if n.shape is None or len(n.shape) == 0:
            continue
        parents = [geo[p] for p in n.parents if p in geo]
        if n.op == "input":
            ax = (1, 2) if len(n.shape) == 3 else None
        elif not parents:
            continue
        else:
            first = n.parents[0]
            ax = (
                _spatial_axes(n, axes.get(first), rank.get(first, 0))
                if all(axes.get(p) == axes.get(first) for p in n.parents)
                else None
            )
        size = (n.shape[ax[0]], n.shape[ax[1]]) if ax is not None else (1, 1)
        axes[n.name], rank[n.name] = ax, len(n.shape)
        if moved is not None and ax is not None and (ax != (1, 2) or len(n.shape) != 3):
            moved[n.name] = ax
        standard = ax == (1, 2) and len(n.shape) == 3
        if n.op == "input":
            geo[n.name] = input_geometry(input_size)
        elif n.op in ("conv", "maxpool", "avgpool") and standard:
            p = n.params
            geo[n.name] = window_geometry(
                parents[0], size, kernel(n), p["stride"], p["padding"], p["dilation"]
            )
        elif n.op in ("adaptive_avgpool", "adaptive_maxpool") and standard:
            geo[n.name] = adaptive_geometry(parents[0], size)
        elif n.op == "cat" and standard and n.params["dim"] in (2, 3, -1, -2):
            geo[n.name] = concat_geometry(
                [geo[p] for p in n.inputs], 0 if n.params["dim"] in (2, -2) else 1
            )
        elif (
            ax is not None
            and all(g.size == size or 1 in g.size for g in parents)
            and n.op in _POINTWISE
            and not (n.op == "cat" and n.params["dim"] % (len(n.shape) + 1) - 1 in ax)
        ):
            geo[n.name] = union_geometry(parents, size)
        else:
            axes[n.name] = None
            if moved is not None and n.name in moved:
                moved[n.name] = None
            geo[n.name] = hull_geometry(parents, (1, 1) if ax is None else size)
    return geo
