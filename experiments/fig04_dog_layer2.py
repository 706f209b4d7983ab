"""Source material, figure 4: the same dog and the projections of all 64 features
of layer 2.

    python experiments/fig04_dog_layer2.py [--data D] [--model M] [--out O]
"""

import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from deconvviz.options import projection_options  # noqa: E402
from deconvviz.figures import experiment_command  # noqa: E402

DATA = str(REPO.parent / "shared" / "datasets" / "cifar10")
OUT = str(REPO / "outputs" / "figures")
LAYER = 2
NAME = "fig04_dog_layer2"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="train")
@click.option("--dog", type=click.IntRange(0), default=0, show_default=True,
              help="which dog of the split (0 = the first image of class 'dog')")
@projection_options("map")
def main(model, source, out, dog, mode, rule, unpool):
    """The dog and the projections of all 64 features of layer 2 (source figure 4)."""
    from fig01_dog_layer1 import dog_figure

    return dog_figure(model, source, out, LAYER, NAME, dog, mode, rule, unpool)


if __name__ == "__main__":
    main()
