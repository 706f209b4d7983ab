"""Source material, figure 1: one training image (a dog) and the projections of all
32 features of layer 1.

    python experiments/fig01_dog_layer1.py [--data D] [--model M] [--out O]
"""

from pathlib import Path

import click
from _checkout import DATA, OUT

from deconvviz.cli.common import projection_options
from deconvviz.cli.experiment import experiment_command
from deconvviz.figures import all_features_figure, find_class_image, load_images
from deconvviz.render.figures import save_png
from deconvviz.store.figure import write_h5

LAYER = 1
NAME = "fig01_dog_layer1"

__all__ = ["main", "dog_figure", "dog_command"]


def dog_figure(model, source, out, layer, name, dog, mode, rule, unpool):
    """Project every feature of ``layer`` for the ``dog``-th dog of ``source``; write PNG + HDF5."""
    index = find_class_image(source, "dog", dog)
    raw, x, _ = load_images(model, source, [index])
    fig, proj = all_features_figure(
        model,
        raw,
        x,
        layer,
        f"dog #{index} ({source.split or ''})",
        mode=mode,
        rule=rule,
        unpool=unpool,
    )
    png = save_png(fig, Path(out) / f"{name}.png")
    h5 = write_h5(
        Path(out) / f"{name}.h5",
        {
            "image": raw,
            "image_index": [index],
            "projections": proj.projections,
            "feature": proj.feature,
            "activation": proj.activation,
            "position": proj.position,
        },
        {"layer": layer, "mode": mode, "rule": rule, "unpool": unpool, "data": source.description},
    )
    return [png, h5]


def dog_command(layer, name, doc):
    """The click command of a "dog, all features of ``layer``" figure (figures 1 and 4)."""

    @experiment_command(DATA, OUT, split="train")
    @click.option(
        "--dog",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="which dog of the split (0 = the first image of class 'dog')",
    )
    @projection_options("map")
    def command(model, source, out, dog, mode, rule, unpool):
        return dog_figure(model, source, out, layer, name, dog, mode, rule, unpool)

    command.help = doc
    return command


main = dog_command(
    LAYER, NAME, "The dog and the projections of all 32 features of layer 1 (source figure 1)."
)


if __name__ == "__main__":
    main()
