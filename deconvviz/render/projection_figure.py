"""The picture of one projection run (``deconvviz project``): for each image, the whole
image with the receptive-field box drawn, the image patch under it and the projection cut
to it, both enlarged (nearest neighbour) so small fields stay readable."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .display import image_to_display, to_display

__all__ = ["projection_figure"]


def projection_figure(
    images: np.ndarray,
    projections: np.ndarray,
    boxes: Optional[np.ndarray],
    captions: Sequence[str],
    title: str,
):
    """``images`` uint8 ``(B, 3, H, W)``, ``projections`` raw ``(B, 3, H, W)``,
    ``boxes`` ``(B, 4)`` receptive-field boxes ``(y0, x0, y1, x1)`` (None: the whole
    image). One row per image: image with the box | patch | projection in the box.
    Returns a matplotlib ``Figure`` (not attached to pyplot)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    b, _, h, w = images.shape
    if boxes is None:
        boxes = np.tile(np.array([0, 0, h, w]), (b, 1))
    fig = Figure(figsize=(6.6, 2.0 * b + 0.8), dpi=100)
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(max(1, b), 3, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    whole = image_to_display(torch.from_numpy(np.asarray(images)))
    for i in range(b):
        y0, x0, y1, x1 = (int(v) for v in boxes[i])
        a0, a1, a2 = axes[i]
        a0.imshow(whole[i], interpolation="nearest")
        a0.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor="yellow",
                linewidth=1.2,
            )
        )
        a0.set_title(captions[i], fontsize=7)
        a1.imshow(whole[i][y0:y1, x0:x1], interpolation="nearest")
        a1.set_title(f"image patch ({y1 - y0}x{x1 - x0} receptive field)", fontsize=6)
        crop = torch.from_numpy(np.asarray(projections[i][:, y0:y1, x0:x1], dtype=np.float32))
        a2.imshow(to_display(crop[None])[0], interpolation="nearest")
        a2.set_title("deconvnet projection in the field", fontsize=6)
    fig.subplots_adjust(
        left=0.02, right=0.98, bottom=0.02, top=1 - 0.8 / (2.0 * b + 0.8), wspace=0.1, hspace=0.35
    )
    return fig
