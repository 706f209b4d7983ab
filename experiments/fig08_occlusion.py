"""Zeiler & Fergus, Figure 7: occlusion sensitivity. A grey square slides over a few
test images; maps of the strongest layer-2 feature's total activation, of the
probability of the correct class and of the most probable class.

    python experiments/fig08_occlusion.py [--data D] [--model M] [--out O]

The same as ``deconvviz occlusion --index ...``.
"""

from pathlib import Path

import click
from _checkout import DATA, OUT

from deconvviz.cli.experiment import experiment_command
from deconvviz.figures import (
    run_occlusion,
    seeded_indices,
)

NAME = "fig08_occlusion"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="number of test images (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=3, show_default=True, help="seed of the image choice")
@click.option(
    "--layer",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="layer of the feature whose total activation is mapped",
)
@click.option(
    "--size",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="side of the grey square in pixels",
)
@click.option(
    "--stride",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="step of the square in pixels",
)
def main(model, source, out, count, seed, layer, size, stride):
    """Occlusion sensitivity maps for a few test images (paper Figure 7)."""
    indices = seeded_indices(len(source), count, seed)
    png, h5, _ = run_occlusion(
        model,
        source,
        indices,
        Path(out) / f"{NAME}.png",
        layer=layer,
        size=size,
        stride=stride,
        fill="grey",
        title_extra=f" (seed {seed})",
    )
    return [png, h5]


if __name__ == "__main__":
    main()
