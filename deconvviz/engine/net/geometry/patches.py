"""Receptive-field boxes, windows and image patches of output positions.

A layer's or a node's affine receptive field (``rf_start``, ``rf_jump``, ``rf_size``:
:class:`Field`) places the window of each output position on the image
(:func:`window_origins`); clipped at the border it is the position's box
(:func:`receptive_box`, :func:`boxes_for`, :func:`windows_for`). :func:`extract_patches`
cuts the image under each window (:func:`cut_windows`), zero outside the image.
"""

from __future__ import annotations

from typing import Optional, Protocol, Tuple

import torch


class Field(Protocol):
    """What the boxes below read of a layer's or a node's description
    (:class:`~deconvviz.engine.net.layers.LayerInfo`,
    :class:`~deconvviz.engine.net.nodes.NodeInfo`)."""

    @property
    def rf_start(self) -> Tuple[int, int]: ...
    @property
    def rf_jump(self) -> Tuple[int, int]: ...
    @property
    def rf_size(self) -> Tuple[int, int]: ...
    @property
    def image_size(self) -> Tuple[int, int]: ...


__all__ = [
    "Field",
    "receptive_box",
    "boxes_for",
    "window_origins",
    "windows_for",
    "cut_windows",
    "extract_patches",
]


def receptive_box(
    info: Field, position: Tuple[int, int], image_size: Optional[Tuple[int, int]] = None
) -> Tuple[int, int, int, int]:
    """Input-pixel box ``(y0, x0, y1, x1)`` (end exclusive) under output unit ``position``.

    The box is the unit's receptive field, computed from the kernel, stride,
    padding and dilation of every layer below, clipped at the image border.
    """
    H, W = image_size if image_size is not None else info.image_size
    y0, x0 = window_origins(info, torch.tensor([int(position[0]), int(position[1])])).tolist()
    y1, x1 = y0 + info.rf_size[0], x0 + info.rf_size[1]
    return max(0, y0), max(0, x0), min(H, y1), min(W, x1)


def boxes_for(info: Field, positions: torch.Tensor) -> torch.Tensor:
    """Vectorised :func:`receptive_box`: positions ``(..., 2)`` -> boxes ``(..., 4)`` int64."""
    origin = window_origins(info, positions)
    y0, x0 = origin[..., 0], origin[..., 1]
    H, W = info.image_size
    return torch.stack(
        [
            y0.clamp(0, H),
            x0.clamp(0, W),
            (y0 + info.rf_size[0]).clamp(0, H),
            (x0 + info.rf_size[1]).clamp(0, W),
        ],
        dim=-1,
    )


def window_origins(info: Field, position: torch.Tensor) -> torch.Tensor:
    """Unclipped top-left image pixel ``(..., 2)`` int64 of the ``rf_size`` window of each
    output ``position`` ``(..., 2)``: ``rf_start + position * rf_jump``."""
    pos = position.to(torch.int64)
    return torch.stack(
        [
            info.rf_start[0] + pos[..., 0] * info.rf_jump[0],
            info.rf_start[1] + pos[..., 1] * info.rf_jump[1],
        ],
        dim=-1,
    )


def windows_for(info: Field, position: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Receptive-field windows of output ``position`` s ``(S, 2)``: ``(box (S, 4), origin (S, 2))``.

    ``box`` is ``(y0, x0, y1, x1)`` in image pixels, end exclusive, clipped at the
    border; ``origin`` the unclipped top-left corner of the ``rf_size`` window.
    """
    pos = position.to(torch.int64).reshape(-1, 2)
    origin = window_origins(info, pos)
    # A graph node knows each position's exact box (also where no affine field exists:
    # then the window is the hull of all of them, rf_jump 0).
    exact = getattr(info, "boxes", None)
    box = exact(pos) if exact is not None else boxes_for(info, pos)
    return box, origin


def cut_windows(
    full: torch.Tensor, box: torch.Tensor, origin: torch.Tensor, size: Tuple[int, int]
) -> torch.Tensor:
    """Cut ``full`` ``(S, C, H, W)`` to one window per row: ``(S, C, size_h, size_w)``.

    Row ``s``'s clipped ``box[s]`` lands at ``box[s, :2] - origin[s]`` in its window;
    the rest of the window (outside the image) is zero.
    """
    rh, rw = size
    out = full.new_zeros((full.shape[0], full.shape[1], rh, rw))
    for s in range(full.shape[0]):
        y0, x0, y1, x1 = (int(v) for v in box[s])
        if y1 <= y0 or x1 <= x0:
            continue
        oy, ox = y0 - int(origin[s, 0]), x0 - int(origin[s, 1])
        out[s, :, oy : oy + y1 - y0, ox : ox + x1 - x0] = full[s, :, y0:y1, x0:x1]
    return out


def extract_patches(
    info: Field, images: torch.Tensor, position: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image patches under the receptive fields of output ``position`` s.

    ``images``: ``uint8 (S, 3, H, W)``, one per seed; ``position``: ``(S, 2)``.
    Returns ``(patch uint8 (S, 3, rf_h, rf_w), box int64 (S, 4), origin int64 (S, 2))``
    (see :func:`windows_for`): the patch is the full receptive-field window, the
    clipped crop placed at ``box[:2] - origin`` and zero where the window leaves
    the image.
    """
    box, origin = windows_for(info, position)
    return cut_windows(images, box, origin, info.rf_size), box, origin
