"""Source material, figure 5: layer 2, feature 9 (0-based) projected for a variety of
training images, each image beside its projection.

    python experiments/fig05_layer2_feature9.py [--data D] [--model M] [--out O]
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
LAYER, FEATURE = 2, 9
NAME = "fig05_layer2_feature9"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="train")
@click.option("--count", type=click.IntRange(1), default=16, show_default=True,
              help="number of images (chosen at random with --seed)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the image choice")
@projection_options("map")
def main(model, source, out, count, seed, mode, rule, unpool):
    """Layer 2, feature 9 (0-based) for a variety of images (source figure 5)."""
    from fig02_layer1_feature7 import feature_figure

    return feature_figure(model, source, out, LAYER, FEATURE, NAME, count, seed, mode, rule,
                          unpool)


if __name__ == "__main__":
    main()
