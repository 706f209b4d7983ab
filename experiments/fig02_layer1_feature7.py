"""Source material, figure 2: layer 1, feature 7 (0-based) projected for a variety of
training images, each image beside its projection.

    python experiments/fig02_layer1_feature7.py [--data D] [--model M] [--out O]
"""

from pathlib import Path

import click
from _checkout import DATA, OUT

from deconvviz.cli.common import projection_options
from deconvviz.cli.experiment import experiment_command
from deconvviz.figures import across_images_figure, seeded_indices
from deconvviz.render.figures import save_png
from deconvviz.store.figure import write_h5

LAYER, FEATURE = 1, 7
NAME = "fig02_layer1_feature7"

__all__ = ["main", "feature_figure", "feature_command"]


def feature_figure(model, source, out, layer, feature, name, count, seed, mode, rule, unpool):
    """Project ``feature`` of ``layer`` for ``count`` seeded images; write PNG + HDF5."""
    indices = seeded_indices(len(source), count, seed)
    fig, proj, raw = across_images_figure(
        model, source, indices, layer, feature, mode=mode, rule=rule, unpool=unpool
    )
    png = save_png(fig, Path(out) / f"{name}.png")
    h5 = write_h5(
        Path(out) / f"{name}.h5",
        {
            "images": raw,
            "image_index": indices,
            "label": source.labels[indices],
            "projections": proj.projections,
            "activation": proj.activation,
            "position": proj.position,
        },
        {
            "layer": layer,
            "feature": feature,
            "mode": mode,
            "rule": rule,
            "unpool": unpool,
            "seed": seed,
            "data": source.description,
        },
    )
    return [png, h5]


def feature_command(layer, feature, name, doc):
    """The click command of a "one feature across images" figure (figures 2 and 5)."""

    @experiment_command(DATA, OUT, split="train")
    @click.option(
        "--count",
        type=click.IntRange(1),
        default=16,
        show_default=True,
        help="number of images (chosen at random with --seed)",
    )
    @click.option("--seed", type=int, default=0, show_default=True, help="seed of the image choice")
    @projection_options("map")
    def command(model, source, out, count, seed, mode, rule, unpool):
        return feature_figure(
            model, source, out, layer, feature, name, count, seed, mode, rule, unpool
        )

    command.help = doc
    return command


main = feature_command(
    LAYER, FEATURE, NAME, "Layer 1, feature 7 (0-based) for a variety of images (source figure 2)."
)


if __name__ == "__main__":
    main()
