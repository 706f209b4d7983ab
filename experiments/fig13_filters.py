"""Zeiler & Fergus, Figure 6: first-layer diagnostics. The filters of a conv layer
(layer 1 by default, as RGB tiles each scaled symmetrically around zero) sorted by
their RMS with the RMS under each, so a filter that dominates shows at once, and
the features that never fire on the test images (the largest block-output value
over every image is 0), marked in red.

    python experiments/fig13_filters.py [--data D] [--model M] [--out O] [--layer L]

The same as ``deconvviz filters --data D``; train with ``deconvviz train
--clip-filter-rms 0.1`` for the paper's feature-scale clipping.
"""

import sys
from pathlib import Path

import click
from _checkout import DATA, OUT

from deconvviz.cli.experiment import experiment_command
from deconvviz.engine.net.layers import get_layer
from deconvviz.figures import run_filters

NAME = "fig13_filters"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--layer",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="conv layer whose filters are drawn",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="look for features that never fire in the first N images only  [default: all]",
)
def main(model, source, out, layer, limit):
    """A layer's filters sorted by RMS and its features that never fire (paper Figure 6)."""
    get_layer(model, layer, source.image_size)
    paths, found, dead = run_filters(
        model,
        layer,
        Path(out) / f"{NAME}.png",
        source=source,
        limit=limit,
        command_line=" ".join(sys.argv),
    )
    never = ", ".join(str(int(f)) for f in dead.dead) or "none"
    click.echo(
        f"layer {layer}: RMS {float(found.rms.min()):.4f} .. {float(found.rms.max()):.4f}; "
        f"never fire on {dead.num_images} images: {never}"
    )
    return paths


if __name__ == "__main__":
    main()
