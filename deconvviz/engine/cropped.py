"""The recorded forward pass on each seed's receptive-field crop only.

A seed at position ``p`` of layer L depends on the input only inside its
receptive field, and so do the switches and ReLU masks its reverse pass reads
(every unit under the seed has its receptive field inside the seed's). For a
seed of a deep layer of a large image (conv2_2 of VGG-16 sees 16x16 of 224x224
pixels) recording the whole image's forward pass is most of a projection's
cost; this module records, per seed, only the *cone* under it:

* the window of every level under output ``p`` is affine in ``p``: at the input
  of stack module ``i`` it starts at ``a_i + p * j_i`` and is ``n_i`` wide, the
  same walk down as :mod:`.windowed` (``origin * stride - padding``, ``(n - 1) *
  stride + dilation * (kernel - 1) + 1``); at the image it is the receptive field;
* each seed's image crop (zero outside the image, which is what the first
  conv's zero padding sees) goes up through the stack with **no padding**: a
  convolution or pool of a window of that size gives exactly the window above
  it. Positions of a level that lie outside that level's true extent are the
  full pass's padding: they are zeroed after a convolution and pool, and set to
  ``-inf`` before a max pool, exactly as the padded full pass treats them;
* switches are returned as the full pass's flat indices into each pool's input
  plane, and masks and switches as :class:`~deconvviz.engine.windowed.Local`
  windows, so :func:`~deconvviz.engine.windowed.window_pass` reads them as it
  reads a full recording.

The sums are those of the full pass; only their order inside a convolution may
differ, so results equal it to rounding (1e-12 in float64, a few 1e-7 relative
in float32; a max pool's near-tie decided differently in float32 is the one
way to differ more, as between any two float32 convolution algorithms).
:func:`crop_pays` says when this is cheaper than recording each distinct image
once (for shallow layers of large images, by far; not for a layer whose
receptive field covers the image).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerInfo, _geometry, _out_len, conv_stack
from .recording import Recording
from .windowed import Local, _crop_per_seed, _inside

__all__ = ["cone", "crop_record", "crop_pays", "crop_bytes_per_seed"]


def cone(model: nn.Module, info: LayerInfo) -> List[dict]:
    """Per stack module ``i < info.end``: its true input and output sizes and the
    windows under one block-output position, as ``{"in": (h, w), "out": (h, w),
    "a_in", "j_in", "n_in", "a_out", "j_out", "n_out"}`` (pairs)."""
    modules = list(conv_stack(model))[:info.end]
    sizes, (h, w) = [], info.image_size
    for m in modules:
        geo = _geometry(m)
        if geo is None:
            sizes.append(((h, w), (h, w)))
            continue
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo
        ceil = bool(getattr(m, "ceil_mode", False))
        out = (_out_len(h, kh, sh, ph, dh, ceil), _out_len(w, kw, sw, pw, dw, ceil))
        sizes.append(((h, w), out))
        h, w = out
    levels: List[dict] = [None] * len(modules)
    a, j, n = (0, 0), (1, 1), (1, 1)
    for i in range(len(modules) - 1, -1, -1):
        geo = _geometry(modules[i])
        lv = {"in": sizes[i][0], "out": sizes[i][1], "a_out": a, "j_out": j, "n_out": n}
        if geo is not None:
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo
            a = (a[0] * sh - ph, a[1] * sw - pw)
            j = (j[0] * sh, j[1] * sw)
            n = ((n[0] - 1) * sh + dh * (kh - 1) + 1, (n[1] - 1) * sw + dw * (kw - 1) + 1)
        lv.update(a_in=a, j_in=j, n_in=n)
        levels[i] = lv
    return levels


def _origin(lv: dict, side: str, pos: torch.Tensor) -> torch.Tensor:
    a, j = lv["a_" + side], lv["j_" + side]
    return torch.stack([a[0] + pos[:, 0] * j[0], a[1] + pos[:, 1] * j[1]], dim=1)


def _valid(origin: torch.Tensor, size: Tuple[int, int], bounds: Tuple[int, int]) -> torch.Tensor:
    """``(S, 1, n_h, n_w)`` bool: window positions inside ``bounds``."""
    vy, vx, _, _ = _inside(origin, size, bounds)
    return (vy[:, :, None] & vx[:, None, :]).unsqueeze(1)


def _crop_images(x: torch.Tensor, idx: torch.Tensor, origin: torch.Tensor,
                 size: Tuple[int, int]) -> torch.Tensor:
    """``x[idx[s]]`` inside each window, zero outside the image: ``(S, C, n_h, n_w)``
    in channels-last memory format."""
    crop, inside = _crop_per_seed(x, idx, origin, size)        # (S, n_h, n_w, C)
    if not bool(inside.all()):
        crop = crop * inside.to(crop.dtype)
    return crop.permute(0, 3, 1, 2)


def crop_record(model: nn.Module, images: torch.Tensor, info: LayerInfo,
                image_index: torch.Tensor, position: torch.Tensor, masks: bool = True
                ) -> Tuple[Recording, torch.Tensor]:
    """Record, for S seeds at block-output ``position`` (S, 2) of layer ``info`` on
    images ``images[image_index]`` (model input), the forward pass inside each
    seed's cone only. Returns ``(recording, output (S, C, 1, 1))``: switches and
    (with ``masks``) ReLU masks as :class:`Local` windows indexed by seed
    (``0..S-1``), the true ``in_sizes``, and each seed's block-output column."""
    modules = list(conv_stack(model))[:info.end]
    levels = cone(model, info)
    pos = position.to(torch.int64)
    rec = Recording()
    x = _crop_images(images, image_index, _origin(levels[0], "in", pos), levels[0]["n_in"])
    for i, m in enumerate(modules):
        lv = levels[i]
        if isinstance(m, nn.ReLU):
            x = F.relu(x)
            if masks:
                rec.masks[i] = Local(x > 0, _origin(lv, "out", pos), lv["out"])
            continue
        rec.in_sizes[i] = lv["in"]
        out_origin = _origin(lv, "out", pos)
        valid_out = _valid(out_origin, lv["n_out"], lv["out"])
        if isinstance(m, nn.MaxPool2d):
            in_origin = _origin(lv, "in", pos)
            valid_in = _valid(in_origin, lv["n_in"], lv["in"])
            if not bool(valid_in.all()):
                x = x.masked_fill(~valid_in, float("-inf"))
            (kh, kw), (sh, sw), _, (dh, dw) = _geometry(m)
            x, local = F.max_pool2d(x, (kh, kw), (sh, sw), 0, (dh, dw), return_indices=True)
            nw = lv["n_in"][1]
            flat = ((in_origin[:, 0].view(-1, 1, 1, 1) + local // nw) * lv["in"][1]
                    + in_origin[:, 1].view(-1, 1, 1, 1) + local % nw)
            rec.switches[i] = Local(flat, out_origin, lv["out"])
        else:
            x = F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if not bool(valid_out.all()):
            x = x.masked_fill(~valid_out, 0.0)
    return rec, x


def _conv_macs(model: nn.Module, info: LayerInfo, windowed: bool) -> int:
    total = 0
    for m, lv in zip(list(conv_stack(model))[:info.end], cone(model, info)):
        if isinstance(m, nn.Conv2d):
            n = lv["n_out"] if windowed else lv["out"]
            total += (n[0] * n[1] * m.out_channels * m.in_channels // m.groups
                      * m.kernel_size[0] * m.kernel_size[1])
    return total


def crop_pays(model: nn.Module, info: LayerInfo, seeds: int, images: int) -> bool:
    """Whether recording ``seeds`` cones costs fewer multiply-adds than recording
    ``images`` whole images up to layer ``info``."""
    return seeds * _conv_macs(model, info, True) < images * _conv_macs(model, info, False)


def crop_bytes_per_seed(model: nn.Module, info: LayerInfo, dtype: torch.dtype) -> int:
    """Memory one seed's cone takes: two activations at its largest convolution, plus
    the switches (int64) and masks (bool) kept at every level, to size batches of seeds."""
    elem = torch.finfo(dtype).bits // 8
    largest, kept = 0, 0
    channels = conv_stack(model)[0].in_channels
    for m, lv in zip(list(conv_stack(model))[:info.end], cone(model, info)):
        area_out = lv["n_out"][0] * lv["n_out"][1]
        if isinstance(m, nn.Conv2d):
            area_in = lv["n_in"][0] * lv["n_in"][1]
            largest = max(largest, (m.in_channels * area_in + m.out_channels * area_out) * elem)
            channels = m.out_channels
        else:
            kept += area_out * channels * (8 if isinstance(m, nn.MaxPool2d) else 1)
    return int(2 * largest + kept)
