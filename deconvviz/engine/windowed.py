"""The deconvnet's reverse pass inside the receptive field only (Zeiler & Fergus, arXiv 1311.2901).

A seed at one position of layer L can only reach the input inside that unit's
receptive field, so its reverse pass needs, at every level below, only the
window of that level that lies under the seed. This module runs the reverse
pass on those windows:

* **The seed's own block** is done in closed form: a seed is one value of one
  channel and stays one value through the block's unpools (that channel's
  switch moves it) and ReLUs, so the block's transposed convolution is the
  filter ``W[f]`` times the value, stamped at one place.
* **Every level below** works on a window of fixed size whose top-left corner
  differs per seed: a transposed convolution of an ``n``-wide window with
  kernel ``k``, stride ``s`` and dilation ``d`` covers exactly
  ``(n - 1) * s + d * (k - 1) + 1`` input positions starting at
  ``origin * s - padding``; an unpool scatters into the same extent of its
  input through the switches, cropped to the window. Windows are kept
  *unclipped* (they may reach past the image border), so every seed of a layer
  has windows of the same size at every level and all go through one batched
  pass; positions outside a level's extent are zeroed after each transposed
  convolution, exactly as the full pass crops them away. Overlapping pools,
  strides, dilation, padding and ceil mode need nothing else.

The result lies inside the seed's receptive-field window (``LayerInfo.rf_start
+ position * rf_jump``, size ``rf_size``) and equals the full-image pass there
(exactly in float64; the sums are the same, only the zeros outside the window
are skipped); outside it the full pass is zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerInfo, conv_stack
from .recording import Recording

__all__ = ["Local", "window_pass", "paste_windows", "window_bytes_per_seed"]


@dataclass
class Local:
    """One level's record (switches or a ReLU mask) kept only inside each seed's window,
    as :func:`deconvviz.engine.cropped.crop_record` makes it: ``data[s]`` ``(C, n_h,
    n_w)`` starts at ``origin[s]`` (row, col) of a level whose true size is
    ``bounds``; it is indexed by seed where a full record is indexed by image.
    Switch values are the full record's (flat indices into the pool's input plane)."""

    data: torch.Tensor
    origin: torch.Tensor
    bounds: Tuple[int, int]


def _bounds(t) -> Tuple[int, int]:
    return tuple(t.bounds) if isinstance(t, Local) else tuple(t.shape[-2:])


def _at(t, idx: torch.Tensor, feat: torch.Tensor, y: torch.Tensor, x: torch.Tensor):
    """``t[idx, feat, y, x]`` of a full record or a :class:`Local` one."""
    if isinstance(t, Local):
        return t.data[idx, feat, y - t.origin[idx, 0], x - t.origin[idx, 1]]
    return t[idx, feat, y, x]


def _pair(v) -> Tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _geometry(m: nn.Module):
    stride = m.stride if m.stride is not None else m.kernel_size
    return _pair(m.kernel_size), _pair(stride), _pair(m.padding), _pair(m.dilation)


def _extent(size: Tuple[int, int], m: nn.Module) -> Tuple[int, int]:
    """Input-window size under an output window of ``size`` for conv or pool ``m``."""
    (kh, kw), (sh, sw), _, (dh, dw) = _geometry(m)
    return (size[0] - 1) * sh + dh * (kh - 1) + 1, (size[1] - 1) * sw + dw * (kw - 1) + 1


def _inside(origin: torch.Tensor, size: Tuple[int, int], bounds: Tuple[int, int]):
    """Per-seed masks of the window rows ``(S, n_h)`` and columns ``(S, n_w)`` in bounds."""
    dev = origin.device
    ys = origin[:, :1] + torch.arange(size[0], device=dev)
    xs = origin[:, 1:] + torch.arange(size[1], device=dev)
    return (ys >= 0) & (ys < bounds[0]), (xs >= 0) & (xs < bounds[1]), ys, xs


def _zero_outside(signal: torch.Tensor, origin: torch.Tensor, bounds: Tuple[int, int]
                  ) -> torch.Tensor:
    vy, vx, _, _ = _inside(origin, tuple(signal.shape[-2:]), bounds)
    if bool(vy.all()) and bool(vx.all()):
        return signal
    keep = (vy[:, None, :, None] & vx[:, None, None, :]).to(signal.dtype)
    return signal * keep


def _crop_per_seed(t: torch.Tensor, idx: torch.Tensor, origin: torch.Tensor,
                   size: Tuple[int, int]):
    """``t[idx[s], :, window of seed s]`` as ``(S, n_h, n_w, C)`` plus the in-bounds mask
    ``(S, n_h, n_w, 1)``; out-of-bounds entries repeat the nearest border value."""
    vy, vx, ys, xs = _inside(origin, size, _bounds(t))
    if isinstance(t, Local):   # the window lies inside the seed's recorded cone
        ys, xs, t = ys - t.origin[idx, :1], xs - t.origin[idx, 1:], t.data
    ys = ys.clamp(0, t.shape[-2] - 1)
    xs = xs.clamp(0, t.shape[-1] - 1)
    crop = t[idx[:, None, None], :, ys[:, :, None], xs[:, None, :]]   # (S, n_h, n_w, C)
    return crop, (vy[:, :, None] & vx[:, None, :]).unsqueeze(-1)


def _seed_block(model: nn.Module, rec: Recording, info: LayerInfo, idx: torch.Tensor,
                feat: torch.Tensor, pos: torch.Tensor, act: torch.Tensor, rule: str):
    """The seed's own block in closed form -> ``(signal (S, C_in, e_h, e_w), origin (S, 2))``
    at the block's input, ``e`` the conv's dilated kernel extent."""
    modules = list(conv_stack(model))
    y, x, v = pos[:, 0].clone(), pos[:, 1].clone(), act.clone()
    for i in range(info.end - 1, info.start, -1):
        m = modules[i]
        if isinstance(m, nn.MaxPool2d):
            flat = _at(rec.switches[i], idx, feat, y, x)  # flat index into the pool's input
            w_in = rec.in_sizes[i][1]
            y, x = flat // w_in, flat % w_in
        elif isinstance(m, nn.ReLU):
            if rule == "deconvnet":
                v = v.clamp(min=0)
            else:
                mask = _at(rec.masks[i], idx, feat, y, x).to(v.dtype)
                v = v.clamp(min=0) * mask if rule == "guided" else v * mask
    conv = modules[info.start]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _geometry(conv)
    stamp = conv.weight[feat] * v.view(-1, 1, 1, 1)          # (S, C_in, kh, kw)
    if dh > 1 or dw > 1:
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        wide = stamp.new_zeros(stamp.shape[:2] + (eh, ew))
        wide[:, :, ::dh, ::dw] = stamp
        stamp = wide
    origin = torch.stack([y * sh - ph, x * sw - pw], dim=1)
    stamp = _zero_outside(stamp.contiguous(memory_format=torch.channels_last), origin,
                          rec.in_sizes[info.start])
    return stamp, origin


def _unpool(signal: torch.Tensor, origin: torch.Tensor, switches: torch.Tensor,
            idx: torch.Tensor, m: nn.MaxPool2d, in_bounds: Tuple[int, int]):
    """Unpool a window through the recorded switches, into the window below it."""
    s, c, nh, nw = signal.shape
    _, (sh, sw), (ph, pw), _ = _geometry(m)
    eh, ew = _extent((nh, nw), m)
    below = torch.stack([origin[:, 0] * sh - ph, origin[:, 1] * sw - pw], dim=1)
    sw_crop, valid = _crop_per_seed(switches, idx, origin, (nh, nw))       # (S, nh, nw, C)
    w_in = in_bounds[1]
    local = ((sw_crop // w_in - below[:, 0].view(-1, 1, 1, 1)) * ew
             + (sw_crop % w_in - below[:, 1].view(-1, 1, 1, 1)))
    # Outside the pool's output the signal is zero; any index inside the window will do.
    local = torch.where(valid, local, torch.zeros((), dtype=local.dtype, device=local.device))
    out = signal.new_zeros((s, eh * ew, c))
    out.scatter_add_(1, local.reshape(s, nh * nw, c),
                     signal.permute(0, 2, 3, 1).reshape(s, nh * nw, c))
    return out.view(s, eh, ew, c).permute(0, 3, 1, 2), below


def _rectify(signal: torch.Tensor, origin: torch.Tensor, masks, idx: torch.Tensor, rule: str):
    if rule == "deconvnet":
        return signal.clamp(min=0)
    mask, _ = _crop_per_seed(masks, idx, origin, tuple(signal.shape[-2:]))
    mask = mask.permute(0, 3, 1, 2).to(signal.dtype)
    return signal.clamp(min=0) * mask if rule == "guided" else signal * mask


def window_pass(model: nn.Module, rec: Recording, info: LayerInfo, image_index: torch.Tensor,
                feature: torch.Tensor, position: torch.Tensor, activation: torch.Tensor,
                rule: str = "deconvnet") -> Tuple[torch.Tensor, torch.Tensor]:
    """Project S one-position seeds of layer ``info`` back to pixels inside their windows.

    Seed ``s`` is the value ``activation[s]`` of feature ``feature[s]`` at
    ``position[s]`` (row, col) of the layer's block output for recorded image
    ``image_index[s]`` (``rec`` holds that pass's switches, and its ReLU masks
    for the ``guided`` and ``gradient`` rules). Switches unpooling only.
    Returns ``(projections (S, C, e_h, e_w), origin (S, 2))``: the projection
    restricted to the input window whose unclipped top-left pixel is
    ``origin[s]``; it is zero outside that window and outside the image. All
    seeds share the window size, which fits inside ``info.rf_size``.
    """
    modules = list(conv_stack(model))
    signal, origin = _seed_block(model, rec, info, image_index, feature, position, activation,
                                 rule)
    for i in range(info.start - 1, -1, -1):
        m = modules[i]
        if isinstance(m, nn.MaxPool2d):
            signal, origin = _unpool(signal, origin, rec.switches[i], image_index, m,
                                     rec.in_sizes[i])
        elif isinstance(m, nn.ReLU):
            signal = _rectify(signal, origin, rec.masks.get(i), image_index, rule)
        else:
            _, (sh, sw), (ph, pw), _ = _geometry(m)
            signal = F.conv_transpose2d(signal.contiguous(memory_format=torch.channels_last),
                                        m.weight, stride=m.stride, dilation=m.dilation,
                                        groups=m.groups)
            origin = torch.stack([origin[:, 0] * sh - ph, origin[:, 1] * sw - pw], dim=1)
            signal = _zero_outside(signal, origin, rec.in_sizes[i])
    return signal, origin


def paste_windows(windows: torch.Tensor, origin: torch.Tensor, canvas_origin: torch.Tensor,
                  canvas_size: Tuple[int, int]) -> torch.Tensor:
    """Place each window ``(S, C, n_h, n_w)`` (top-left ``origin[s]``) on a zero canvas
    ``(S, C, *canvas_size)`` whose top-left is ``canvas_origin[s]`` (both in input
    pixels). Parts falling off the canvas must be zero (they are dropped)."""
    s, c, nh, nw = windows.shape
    out = windows.new_zeros((s, canvas_size[0], canvas_size[1], c))
    if s == 0:
        return out.permute(0, 3, 1, 2)
    off = (origin - canvas_origin).to(windows.device)
    vy, vx, ys, xs = _inside(off, (nh, nw), canvas_size)
    ys, xs = ys.clamp(0, canvas_size[0] - 1), xs.clamp(0, canvas_size[1] - 1)
    vals = windows.permute(0, 2, 3, 1)
    if not (bool(vy.all()) and bool(vx.all())):
        vals = vals * (vy[:, :, None] & vx[:, None, :]).unsqueeze(-1).to(vals.dtype)
    rows = torch.arange(s, device=windows.device)[:, None, None]
    # Accumulate: clamped rows of an off-canvas (zero) part add 0 where they land.
    out.index_put_((rows, ys[:, :, None], xs[:, None, :]), vals, accumulate=True)
    return out.permute(0, 3, 1, 2)


def window_bytes_per_seed(model: nn.Module, info: LayerInfo, dtype: torch.dtype) -> int:
    """Largest memory one seed's windows take at any level of :func:`window_pass`
    (signal, scatter buffer and switch indices), to size batches of seeds."""
    modules = list(conv_stack(model))
    elem = torch.finfo(dtype).bits // 8
    conv = modules[info.start]
    (kh, kw), _, _, (dh, dw) = _geometry(conv)
    size = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    channels = conv.in_channels
    worst = channels * size[0] * size[1] * elem
    for m in reversed(modules[:info.start]):
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            new = _extent(size, m)
            if isinstance(m, nn.MaxPool2d):  # switch crop (int64) + scatter buffer
                worst = max(worst, channels * (size[0] * size[1] * 16 + new[0] * new[1] * elem))
            else:
                worst = max(worst, (m.out_channels * size[0] * size[1]
                                    + m.in_channels * new[0] * new[1] * 2) * elem)
                channels = m.in_channels
            size = new
    return int(worst)
