"""The occlusion figure (Zeiler & Fergus, Figure 7)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["occlusion_figure"]


def occlusion_figure(
    maps,
    images: np.ndarray,
    class_names: Sequence[str],
    title: str,
    captions: Optional[Sequence[str]] = None,
):
    """One row per image: the image with the occluder drawn at one position, the
    feature's total activation, the probability of the correct class and the most
    probable class, each as a map over the occluder's centre.

    ``images``: display RGB ``(B, H, W, 3)`` in ``[0, 1]``. Returns a matplotlib
    ``Figure`` (not attached to pyplot).
    """
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    b = maps.activation.shape[0]
    h, w = images.shape[1:3]
    half = maps.size / 2.0
    ext = (
        float(maps.xs[0]) + half - 0.5,
        float(maps.xs[-1]) + half - 0.5,
        float(maps.ys[-1]) + half - 0.5,
        float(maps.ys[0]) + half - 0.5,
    )
    ncls = max(len(class_names), int(maps.predicted.max()) + 1 if b else 1)
    cmap_cls = ListedColormap(colormaps["tab10" if ncls <= 10 else "tab20"].colors[:ncls])
    norm_cls = BoundaryNorm(np.arange(-0.5, ncls + 0.5), ncls)
    fig = Figure(figsize=(10.5, 2.3 * b + 0.6), dpi=100)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(b, 4, squeeze=False)

    def name(k):
        return class_names[k] if 0 <= k < len(class_names) else str(k)

    for i in range(b):
        a0, a1, a2, a3 = axes[i]
        a0.imshow(images[i], interpolation="nearest")
        a0.add_patch(
            Rectangle(
                (float(maps.xs[len(maps.xs) // 2]) - 0.5, float(maps.ys[len(maps.ys) // 2]) - 0.5),
                maps.size,
                maps.size,
                facecolor=(0.5, 0.5, 0.5),
                edgecolor="white",
                linewidth=0.8,
            )
        )
        cap = captions[i] if captions is not None else ""
        truth = (
            f"true: {name(int(maps.label[i]))}"
            if int(maps.label[i]) >= 0
            else f"unlabelled (predicted {name(int(maps.target[i]))})"
        )
        a0.set_title(f"{cap}\n{truth}, {maps.size}px square", fontsize=7)
        m1 = a1.imshow(
            maps.activation[i].numpy(), extent=ext, cmap="viridis", interpolation="nearest"
        )
        a1.set_title(
            f"layer {maps.layer}, feature {int(maps.feature[i])} (0-based)\ntotal "
            f"activation (unoccluded {float(maps.base_activation[i]):.3g})",
            fontsize=7,
        )
        fig.colorbar(m1, ax=a1, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
        m2 = a2.imshow(
            maps.probability[i].numpy(),
            extent=ext,
            cmap="magma",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        a2.set_title(
            f"p({name(int(maps.target[i]))})\n(unoccluded {float(maps.base_probability[i]):.3f})",
            fontsize=7,
        )
        fig.colorbar(m2, ax=a2, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
        a3.imshow(
            maps.predicted[i].numpy(),
            extent=ext,
            cmap=cmap_cls,
            norm=norm_cls,
            interpolation="nearest",
        )
        present = sorted(set(int(v) for v in maps.predicted[i].reshape(-1).tolist()))
        a3.set_title("most probable class", fontsize=7)
        handles = [Rectangle((0, 0), 1, 1, color=cmap_cls(k)) for k in present]
        a3.legend(
            handles,
            [name(k) for k in present],
            fontsize=6,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            frameon=False,
            handlelength=1.0,
        )
        for ax in (a0, a1, a2, a3):
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.tick_params(labelsize=5)
    fig.subplots_adjust(
        left=0.03, right=0.88, bottom=0.03, top=1 - 0.85 / (2.3 * b + 0.6), wspace=0.45, hspace=0.55
    )
    return fig
