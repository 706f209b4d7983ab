"""Zeiler & Fergus, Figure 2, for our network: for a random (seeded) subset of features of
each layer, the top-9 activations over the test set: their projections (left block)
beside the image patches under their receptive fields (right block).

    python experiments/fig06_top9.py [--data D] [--model M] [--out O]

The full report (every feature) is kept in the HDF5 file; ``deconvviz`` can redraw it.
"""

import sys
from pathlib import Path

import click
import torch
from _checkout import DATA, OUT

from deconvviz.cli.experiment_cmd import experiment_command
from deconvviz.render.figure_parts import model_caption, save_png, short_description, table_figure
from deconvviz.render.report_png import layer_cell
from deconvviz.runs.report_run import build_report
from deconvviz.store.report_write import write_report_h5

NAME = "fig06_top9"

__all__ = ["main"]


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--per-layer",
    type=click.IntRange(1),
    default=6,
    show_default=True,
    help="features shown per layer (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the features")
@click.option(
    "--top",
    type=click.IntRange(1),
    default=9,
    show_default=True,
    help="activations kept per feature",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="scan only the first LIMIT images (default: the whole split)",
)
def main(model, source, out, per_layer, seed, top, limit):
    """Top-9 projections and patches for a seeded subset of features of each layer."""
    report = build_report(
        model, source, k=top, progress=False, limit=limit, command_line=" ".join(sys.argv)
    )
    g = torch.Generator().manual_seed(seed)
    rows, caps, names = [], [], []
    for layer in sorted(report.layers):
        lr = report.layers[layer]
        feats = sorted(torch.randperm(lr.features, generator=g)[:per_layer].tolist())
        rows.append([layer_cell(lr, f) for f in feats])
        caps.append([f"f{f}: top {float(lr.activation[f, 0]):.2f}" for f in feats])
        names.append(f"layer {layer}")
    cols = max(len(r) for r in rows)
    title = (
        f"Zeiler & Fergus Fig. 2 for our network: top {report.layers[min(report.layers)].k} "
        f"activations over {report.attrs['num_images']} images of "
        f"{short_description(source)} for {per_layer} random features (0-based, seed {seed})"
        f" per layer\nin each cell: projections (left block, deconvnet, switches) and the "
        f"image patches under their receptive fields (right block), strongest first\n"
        f"{model_caption(model)}; 'top' = the strongest activation"
    )
    aspect = max(c.shape[0] / c.shape[1] for r in rows for c in r)
    png = save_png(
        table_figure(rows, caps, names, [""] * cols, title, tile_inches=2.4, tile_aspect=aspect),
        Path(out) / f"{NAME}.png",
    )
    h5 = write_report_h5(report, Path(out) / f"{NAME}.h5")
    return [png, h5]


if __name__ == "__main__":
    main()
