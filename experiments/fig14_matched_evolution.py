"""Zeiler & Fergus, Figure 4, matched: every feature of the last checkpoint followed back
through training. Where Figure 7 (``fig07_feature_evolution.py``) shows feature ``i`` of
every epoch, assuming feature ``i`` of epoch 1 is feature ``i`` of epoch 30, this one
matches each checkpoint's features to the next one's by the correlation of their
maximum per image over the same images (an optimal one-to-one assignment, as
``deconvviz compare`` does), and draws each final feature's chain: its strongest
projection and patch in the checkpoint of each epoch.

    python experiments/fig14_matched_evolution.py --checkpoints runs/ [--data D] [--out O]

``--checkpoints`` takes checkpoint files and/or folders (every ``*-epochN.pt`` in them,
ordered by N), made by ``deconvviz train --save-epochs 1,2,5,... --out X.pt``;
``experiments/run_all.py`` trains them first when there are none.
"""

import sys
from pathlib import Path

import click
from _checkout import DATA, OUT
from fig07_feature_evolution import epoch_checkpoints

from deconvviz import load_model
from deconvviz.cli.common import LAYER
from deconvviz.cli.experiment import experiment_command
from deconvviz.runs.compare import compare_networks

NAME = "fig14_matched_evolution"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="train", needs_model=False)
@click.option(
    "--checkpoints",
    multiple=True,
    required=True,
    help="checkpoint files or folders of *-epochN.pt (repeatable)",
)
@click.option(
    "--layer",
    "layers",
    type=LAYER,
    multiple=True,
    help="layer number or node name (repeatable)  [default: 1 and 2]",
)
@click.option(
    "--top",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="images kept per feature in each checkpoint's report",
)
@click.option(
    "--limit",
    type=click.IntRange(2),
    default=None,
    help="scan only the first LIMIT images (default: the whole split)",
)
@click.option(
    "--min-correlation",
    type=click.FloatRange(-1, 1),
    default=0.5,
    show_default=True,
    help="a chain breaks at a step correlating less",
)
def main(source, out, checkpoints, layers, top, limit, min_correlation):
    """Every feature of the last epoch followed back through training, matched (Fig. 4)."""
    models = sorted(
        (load_model(p) for p in epoch_checkpoints(checkpoints)),
        key=lambda m: (int(m.meta.get("epochs") or 0), m.meta["path"]),
    )
    nets = [(f"epoch {int(m.meta.get('epochs') or 0)}", m) for m in models]
    written = []
    for layer in layers or (1, 2):
        folder = Path(out) / f"{NAME}_layer{layer}"
        paths = compare_networks(
            nets,
            layer,
            folder,
            source,
            top=top,
            limit=limit,
            threshold=min_correlation,
            html=False,
            progress=False,
            command_line=" ".join(sys.argv),
        )
        written += paths
    return written


if __name__ == "__main__":
    main()
