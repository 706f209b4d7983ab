"""Source material, figure 3: the maximum activations of the 32 layer-1 features over a
batch of training images: for each feature the image that drives it most, and its
projection.

    python experiments/fig03_max_activations.py [--data D] [--model M] [--out O]
"""

from pathlib import Path

import click
import torch
from _checkout import DATA, OUT

from deconvviz import deconvolve, to_display
from deconvviz.cli.experiment_cmd import experiment_command
from deconvviz.engine.scan import strongest_images
from deconvviz.render.display import image_to_display, pairs_figure
from deconvviz.render.figure_parts import class_name, model_caption, save_png, short_description
from deconvviz.runs.figures_run import load_images, seeded_indices
from deconvviz.store.figure_h5 import write_h5

NAME = "fig03_max_activations"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="train")
@click.option(
    "--layer",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="layer whose features are shown",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="images in the batch (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the batch")
@click.option(
    "--mode",
    type=click.Choice(["map", "max"]),
    default="map",
    show_default=True,
    help="seed the whole feature map (source material) or its maximum (paper)",
)
@click.option(
    "--unpool",
    type=click.Choice(["switches", "nearest"]),
    default="switches",
    show_default=True,
    help="unpooling with switches or the switch-free shortcut",
)
def main(model, source, out, layer, batch, seed, mode, unpool):
    """For each layer-1 feature, the batch image that drives it most and its projection."""
    indices = seeded_indices(len(source), batch, seed)
    values, best = strongest_images(model, source, layer, indices=indices)
    values, best = values[:, 0].double(), best[:, 0]  # each feature's strongest image
    nfeat = len(values)
    raw, x, labels = load_images(model, source, best.tolist())
    proj = deconvolve(
        model, x, layer, torch.arange(nfeat), torch.arange(nfeat), mode=mode, unpool=unpool
    )
    names = [
        f"f{k}: #{int(i)} {class_name(source, int(lab))}\nmax {float(v):.2f}"
        for k, (i, lab, v) in enumerate(zip(best, labels, values))
    ]
    title = (
        f"Layer {layer}: the image with each feature's (0-based) largest activation in a batch "
        f"of {len(indices)} images of {short_description(source)} (seed {seed}), and its "
        f"projection\nseed: strongest {'activation' if mode == 'max' else 'feature map'}; "
        f"rule deconvnet, unpool {unpool}; {model_caption(model)}"
    )
    fig = pairs_figure(image_to_display(raw), to_display(proj.projections), names, title, columns=8)
    fig.subplots_adjust(top=1 - 0.75 / fig.get_figheight())
    png = save_png(fig, Path(out) / f"{NAME}.png")
    h5 = write_h5(
        Path(out) / f"{NAME}.h5",
        {
            "batch_index": indices,
            "best_index": best,
            "max_activation": values,
            "images": raw,
            "projections": proj.projections,
            "position": proj.position,
        },
        {"layer": layer, "mode": mode, "unpool": unpool, "seed": seed, "data": source.description},
    )
    return [png, h5]


if __name__ == "__main__":
    main()
