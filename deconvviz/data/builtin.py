"""The built-in image set: ten classes of shapes and textures drawn procedurally
(no files needed), ``builtin:train`` and ``builtin:test``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .source import ImageSource

__all__ = ["BUILTIN_CLASSES", "BUILTIN_SIZES", "synthetic_images", "builtin_source"]

BUILTIN_CLASSES = (
    "disc",
    "square",
    "triangle",
    "blobs",
    "stripes-0",
    "stripes-45",
    "stripes-90",
    "stripes-135",
    "checkerboard",
    "edge",
)
BUILTIN_SIZES = {"train": 10000, "test": 2000}


def synthetic_images(n: int, seed: int = 0, size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """A deterministic, learnable image set: ``(uint8 (n, 3, size, size), labels (n,))``.

    Ten classes (:data:`BUILTIN_CLASSES`): discs, squares, triangles, colour
    blobs, stripes at four orientations, checkerboards and straight edges, drawn
    in random colours at random places and scales over gradient backgrounds with
    a little noise. The same ``(n, seed, size)`` always gives the same images.
    """
    g = torch.Generator().manual_seed(int(seed))

    def u(*shape):
        return torch.rand(shape, generator=g)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    yy, xx = yy.unsqueeze(0), xx.unsqueeze(0)  # (1, S, S)
    labels = torch.arange(n) % len(BUILTIN_CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    bg0, bg1, fg = u(n, 3), u(n, 3), u(n, 3)
    for _ in range(16):  # keep the figure distinguishable from the background
        bad = (fg - (bg0 + bg1) / 2).abs().sum(1) < 0.6
        fg = torch.where(bad.unsqueeze(1), u(n, 3), fg)
    ang = u(n, 1, 1) * 2 * np.pi
    t = (xx * torch.cos(ang) + yy * torch.sin(ang) + 1.5) / 3.0  # (n, S, S)
    img = bg0.view(n, 3, 1, 1) * (1 - t.unsqueeze(1)) + bg1.view(n, 3, 1, 1) * t.unsqueeze(1)
    cx, cy = 0.25 + 0.5 * u(n, 1, 1), 0.25 + 0.5 * u(n, 1, 1)
    r = 0.15 + 0.2 * u(n, 1, 1)
    a, b, c3 = u(n, 1, 1), u(n, 1, 1), u(n, 1, 1)  # per-class extras
    blobs = u(n, 3, 3)
    mask = torch.zeros((n, size, size), dtype=torch.bool)
    for c in range(len(BUILTIN_CLASSES)):
        k = (labels == c).nonzero().flatten()
        if k.numel() == 0:
            continue
        X, Y, CX, CY, R = xx, yy, cx[k], cy[k], r[k]
        if c == 0:  # disc
            m = (X - CX) ** 2 + (Y - CY) ** 2 < R**2
        elif c == 1:  # square (axis-aligned)
            m = ((X - CX).abs() < R * 0.9) & ((Y - CY).abs() < R * 0.9)
        elif c == 2:  # upward triangle
            rel = (Y - (CY - R)) / (2 * R)
            m = (rel >= 0) & (rel <= 1) & ((X - CX).abs() <= rel * R)
        elif c == 3:  # three colour blobs
            bl = blobs[k]
            m = torch.zeros((k.numel(), size, size), dtype=torch.bool)
            for j in range(3):
                bx, by = bl[:, j, 0].view(-1, 1, 1), bl[:, j, 1].view(-1, 1, 1)
                br = 0.08 + 0.1 * bl[:, j, 2].view(-1, 1, 1)
                m |= (X - bx) ** 2 + (Y - by) ** 2 < br**2
        elif 4 <= c <= 7:  # stripes at 0, 45, 90, 135 degrees (+-5)
            theta = np.deg2rad(45 * (c - 4)) + np.deg2rad(10) * (a[k] - 0.5)
            period = 0.12 + 0.15 * b[k]
            proj = Y * torch.cos(theta) - X * torch.sin(theta)
            m = torch.frac(proj / period + c3[k]) < 0.5
        elif c == 8:  # checkerboard
            period = 0.15 + 0.15 * a[k]
            m = ((torch.floor(X / period + b[k]) + torch.floor(Y / period + c3[k])) % 2) == 0
        else:  # straight edge through the image at a random angle
            theta = a[k] * 2 * np.pi
            m = (X - CX) * torch.cos(theta) + (Y - CY) * torch.sin(theta) > 0
        mask[k] = m
    img = torch.where(mask.unsqueeze(1), fg.view(n, 3, 1, 1), img)
    img = img + 0.04 * torch.randn((n, 3, size, size), generator=g)
    out = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return out, labels.to(torch.int64)


def builtin_source(split: str, image_size: int) -> ImageSource:
    n = BUILTIN_SIZES[split]
    seed = 0 if split == "train" else 1
    images, labels = synthetic_images(n, seed=seed, size=image_size)
    return ImageSource(
        description=f"builtin:{split}",
        kind="builtin",
        split=split,
        labels=labels,
        class_names=BUILTIN_CLASSES,
        images=images,
    )
