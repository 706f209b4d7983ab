"""Switches versus the switch-free shortcut: the same projections unpooled with the
recorded switches (Zeiler & Fergus) and by copying each value to its whole pooling
window (the source material's simplification), side by side.

    python experiments/fig09_switches_vs_nearest.py [--data D] [--model M] [--out O]
"""

from pathlib import Path

import click
from _checkout import DATA, OUT

from deconvviz import deconvolve, to_display
from deconvviz.cli.experiment import experiment_command
from deconvviz.engine.analysis import cosine_similarity, strongest_features
from deconvviz.figures import load_images, seeded_indices
from deconvviz.render.display import image_to_display
from deconvviz.render.figures import (
    class_name,
    model_caption,
    save_png,
    short_description,
    table_figure,
)
from deconvviz.store.figure import write_h5

NAME = "fig09_switches_vs_nearest"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=6,
    show_default=True,
    help="number of test images (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the image choice")
@click.option(
    "--mode",
    type=click.Choice(["max", "map"]),
    default="max",
    show_default=True,
    help="seed each image's strongest activation (paper) or its whole feature map",
)
def main(model, source, out, count, seed, mode):
    """Projections with --unpool switches and --unpool nearest, side by side."""
    indices = seeded_indices(len(source), count, seed)
    raw, x, labels = load_images(model, source, indices)
    images = image_to_display(raw)
    rows = [[images[i]] for i in range(len(indices))]
    caps = [[f"{class_name(source, int(labels[i]))}"] for i in range(len(indices))]
    columns, data = ["image"], {"images": raw, "image_index": indices}
    for layer in (1, 2):
        # Each image's strongest feature of the layer (the same seed for both unpoolings).
        feats = strongest_features(model, x, layer)
        res = {
            u: deconvolve(model, x, layer, feats, mode=mode, unpool=u)
            for u in ("switches", "nearest")
        }
        shown = {u: to_display(res[u].projections) for u in res}
        for i in range(len(indices)):
            rho = cosine_similarity(res["switches"].projections[i], res["nearest"].projections[i])
            act = float(res["switches"].activation[i])
            rows[i] += [shown["switches"][i], shown["nearest"][i]]
            caps[i] += [f"f{int(feats[i])}  act {act:.2f}", f"cosine {rho:.2f}"]
            data.setdefault(f"layer{layer}/cosine_similarity", []).append(rho)
        columns += [f"layer {layer}, switches", f"layer {layer}, nearest"]
        data[f"layer{layer}/feature"] = feats
        data[f"layer{layer}/activation"] = res["switches"].activation
        for u in res:
            data[f"layer{layer}/{u}"] = res[u].projections
    names = [f"#{i}" for i in indices]
    title = (
        f"Unpooling with switches (Zeiler & Fergus) vs. copying each value to its whole\n"
        f"pooling window (the source material's shortcut); per layer, each image's strongest "
        f"feature (0-based)\nseed: {'strongest activation' if mode == 'max' else 'whole map'}"
        f"; rule deconvnet; {short_description(source)}; {model_caption(model)}\n"
        f"cosine = cosine similarity of the two signed projections"
    )
    png = save_png(table_figure(rows, caps, names, columns, title), Path(out) / f"{NAME}.png")
    h5 = write_h5(
        Path(out) / f"{NAME}.h5", data, {"mode": mode, "seed": seed, "data": source.description}
    )
    return [png, h5]


if __name__ == "__main__":
    main()
