"""Windows of maps, one per seed: cut, shifted, masked at the map's border, pasted back.

A seed's window of a node's output is a fixed shift of its position
(:class:`~deconvviz.engine.net.geometry.frames.Frame`): these helpers move windows
between frames (:func:`shift`), mask what lies outside a map (:func:`inside`,
:func:`zero_outside`, :func:`fill_outside`), cut each seed's window out of a whole map
(:func:`cut_per_seed`), count what an average pool divides by on a window
(:func:`avg_counts`) and paste windows onto an image-sized canvas (:func:`paste`). The
cone recording (:mod:`.cone`), the reverse walk (:mod:`.reverse`) and the transposes
(:mod:`.transposes`) all cut and paste through them.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "shift",
    "inside",
    "zero_outside",
    "fill_outside",
    "cut_per_seed",
    "avg_counts",
    "paste",
]


def shift(
    t: torch.Tensor, offset: Tuple[int, int], size: Tuple[int, int], fill: float = 0.0
) -> torch.Tensor:
    """The ``size`` window of ``t`` ``(S, C, h, w)`` whose top-left is ``offset`` (the same
    for every row); where it leaves ``t``, ``fill``. A window inside ``t`` is a view."""
    h, w = t.shape[-2:]
    top, left = -offset[0], -offset[1]
    bottom, right = size[0] - h - top, size[1] - w - left
    if max(top, left, bottom, right) <= 0:
        return t[..., offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1]]
    if min(top, left, bottom, right) < 0:
        t = t[..., max(offset[0], 0) : h + min(bottom, 0), max(offset[1], 0) : w + min(right, 0)]
    return F.pad(t, (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)), value=fill)


def inside(
    origin: torch.Tensor, size: Tuple[int, int], lo: Tuple[int, int], hi: Tuple[int, int]
) -> Optional[torch.Tensor]:
    """``(S, 1, n_h, n_w)`` bool: window positions inside ``[lo, hi)``; None if all are."""
    dev = origin.device
    ys = origin[:, :1] + torch.arange(size[0], device=dev)
    xs = origin[:, 1:] + torch.arange(size[1], device=dev)
    iy, ix = (ys >= lo[0]) & (ys < hi[0]), (xs >= lo[1]) & (xs < hi[1])
    if bool(iy.all()) and bool(ix.all()):
        return None
    return (iy[:, :, None] & ix[:, None, :]).unsqueeze(1)


def zero_outside(t: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """``t`` with zeros where ``keep`` (from :func:`inside`) is False; ``t`` must be finite
    (a product keeps channels-last and is several times faster than ``masked_fill``)."""
    return t if keep is None else t * keep.to(t.dtype)


#: Elements per row below which :func:`fill_outside` masks the whole tensor in one pass
#: rather than writing a few slices per row (about what four slice writes cost).
_SLICES_PER_ROW = 12_000


def fill_outside(
    t: torch.Tensor,
    origin: torch.Tensor,
    extent: Tuple[int, int],
    value: float = 0.0,
) -> torch.Tensor:
    """``t`` ``(S, ..., n_h, n_w)``, each row a window with top-left ``origin[s]``, set to
    ``value`` **in place** where the window leaves a map ``extent``: a few slices per
    row instead of a pass over the whole tensor (see :func:`zero_outside`)."""
    n = t.shape[-2:]
    o = origin.cpu()
    if t.numel() < _SLICES_PER_ROW * t.shape[0]:
        # Many small rows (a CIFAR seed's window): one masked pass beats a few slices each.
        ys, xs = o[:, :1] + torch.arange(n[0]), o[:, 1:] + torch.arange(n[1])
        iy, ix = (ys >= 0) & (ys < extent[0]), (xs >= 0) & (xs < extent[1])
        out = ~(iy[:, :, None] & ix[:, None, :])
        return t.masked_fill_(out.view((-1,) + (1,) * (t.dim() - 3) + n).to(t.device), value)
    top, left = (-o).clamp(min=0).unbind(1)
    bottom, right = (torch.tensor(extent) - o).clamp(max=torch.tensor(tuple(n))).unbind(1)
    edges = zip(top.tolist(), bottom.tolist(), left.tolist(), right.tolist())
    for s, (a, b, lt, r) in enumerate(edges):
        if a > 0:
            t[s, ..., :a, :] = value
        if b < n[0]:
            t[s, ..., max(b, 0) :, :] = value
        if lt > 0:
            t[s, ..., :lt] = value
        if r < n[1]:
            t[s, ..., max(r, 0) :] = value
    return t


def cut_per_seed(
    t: torch.Tensor, rows: torch.Tensor, offset: torch.Tensor, size: Tuple[int, int]
) -> torch.Tensor:
    """Row ``rows[s]`` of ``t`` ``(R, C, h, w)`` inside the window at ``offset[s]``:
    ``(S, C, n_h, n_w)``; outside ``t`` it repeats the nearest border value."""
    dev = t.device
    ys = (offset[:, :1].to(dev) + torch.arange(size[0], device=dev)).clamp(0, t.shape[-2] - 1)
    xs = (offset[:, 1:].to(dev) + torch.arange(size[1], device=dev)).clamp(0, t.shape[-1] - 1)
    out = t[rows.to(dev)[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # (S, nh, nw, C)
    return out.permute(0, 3, 1, 2)


def avg_counts(
    origin: torch.Tensor,
    size: Tuple[int, int],
    extent: Tuple[int, int],
    kernel,
    stride,
    padding,
    include_pad: bool,
) -> torch.Tensor:
    """What an average pool divides each output by, for the input window ``size`` at
    ``origin`` ``(S, 2)`` of a map ``extent``: ``(S, 1, h, w)`` as PyTorch counts."""
    lo = tuple(-p for p in padding) if include_pad else (0, 0)
    hi = tuple(e + p for e, p in zip(extent, padding)) if include_pad else tuple(extent)
    keep = inside(origin, size, lo, hi)
    ones = (
        torch.ones((origin.shape[0], 1) + tuple(size), device=origin.device)
        if keep is None
        else keep.to(torch.float32)
    )
    counts = F.avg_pool2d(ones, kernel, stride, 0, divisor_override=1)
    return counts.clamp(min=1)


def paste(
    windows: torch.Tensor,
    origin: torch.Tensor,
    canvas_origin: torch.Tensor,
    canvas_size: Tuple[int, int],
    out: Optional[torch.Tensor] = None,
    rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Each window ``(S, C, n_h, n_w)`` (top-left ``origin[s]``) on a zero canvas
    ``(S, C, *canvas_size)`` whose top-left is ``canvas_origin[s]``; what falls off
    the canvas is dropped (it is zero: outside the image, or outside the window).
    ``out``: a zeroed ``(N, C, *canvas_size)`` tensor to add the canvases into, at its
    rows ``rows`` (distinct; default ``0 .. S-1``), so that chunks of seeds land in
    one result without copies; it is returned."""
    s, c, nh, nw = windows.shape
    off = (origin - canvas_origin).to(windows.device)
    dev = windows.device
    same = s > 0 and bool((off == off[:1]).all())
    if out is None and same:
        return shift(windows, tuple(-int(v) for v in off[0]), canvas_size)
    if out is None:
        out = windows.new_zeros((s, c) + tuple(canvas_size))
    rows = torch.arange(s, device=dev) if rows is None else rows.to(dev)
    if s == 0:
        return out
    if same:
        return out.index_add_(0, rows, shift(windows, tuple(-int(v) for v in off[0]), canvas_size))
    ys = off[:, :1] + torch.arange(nh, device=dev)
    xs = off[:, 1:] + torch.arange(nw, device=dev)
    keep = ((ys >= 0) & (ys < canvas_size[0]))[:, :, None] & ((xs >= 0) & (xs < canvas_size[1]))[
        :, None, :
    ]
    vals = windows * keep.unsqueeze(1).to(windows.dtype)
    # Accumulate: clamped rows of an off-canvas (zero) part add 0 where they land.
    out.index_put_(
        (
            rows.view(-1, 1, 1, 1),
            torch.arange(c, device=dev).view(1, -1, 1, 1),
            ys.clamp(0, canvas_size[0] - 1).view(s, 1, nh, 1),
            xs.clamp(0, canvas_size[1] - 1).view(s, 1, 1, nw),
        ),
        vals,
        accumulate=True,
    )
    return out
