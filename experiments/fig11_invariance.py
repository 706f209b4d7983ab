"""Zeiler & Fergus, Figure 5: invariance to vertical translation, scale and rotation.
A few test images (chosen with --seed) are transformed over a range of amounts
(borders filled with the occlusion experiment's mid-grey); for each amount, the
Euclidean distance between the feature vectors of the original and the
transformed image at layer 1, layer 2 and the classifier input (divided by the
mean feature norm of the originals at that layer, so the layers share one
scale), and the probability of the true class.

    python experiments/fig11_invariance.py [--data D] [--model M] [--out O]

The numbers: ``deconvviz.engine.invariance.invariance_curves``.
"""

import sys
from pathlib import Path

import click
import torch
from _checkout import DATA, OUT

from deconvviz.cli.experiment import experiment_command
from deconvviz.engine.features import resolve_feature_layers
from deconvviz.engine.invariance import (
    IDENTITY,
    TRANSFORMS,
    UNITS,
    amount_range,
    invariance_curves,
    transform_images,
)
from deconvviz.engine.occlusion import fill_value
from deconvviz.figures import load_images, seeded_indices
from deconvviz.render.display import image_to_display
from deconvviz.render.figures import class_name, model_caption, short_description
from deconvviz.render.paper import CurveRow, invariance_figure
from deconvviz.store.figure import write_figure_files

NAME = "fig11_invariance"
NAMES = {"translate": "vertical translation", "scale": "scale", "rotate": "rotation"}

__all__ = ["main"]


def _examples(amounts, k=5):
    """``k`` amounts spread over the range for the example strip (ends included)."""
    if len(amounts) <= k:
        return list(amounts)
    return [amounts[round(i * (len(amounts) - 1) / (k - 1))] for i in range(k)]


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="number of test images (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the image choice")
@click.option(
    "--translate",
    "translate",
    default="-10:10:1",
    show_default=True,
    help="vertical shifts in pixels, START:STOP:STEP or a comma list",
)
@click.option(
    "--scale",
    "scale",
    default="0.5:1.8:0.1",
    show_default=True,
    help="scale factors about the centre, START:STOP:STEP or a comma list",
)
@click.option(
    "--rotate",
    "rotate",
    default="0:360:10",
    show_default=True,
    help="rotations in degrees, START:STOP:STEP or a comma list",
)
@click.option(
    "--layers",
    default="1,2,classifier",
    show_default=True,
    help="comma-separated conv layer numbers and/or 'classifier' (the input of the last Linear)",
)
def main(model, source, out, count, seed, translate, scale, rotate, layers):
    """Invariance of features and of the class probability to translation, scale and
    rotation (paper Figure 5)."""
    ranges = {
        "translate": amount_range(translate, "translate"),
        "scale": amount_range(scale, "scale"),
        "rotate": amount_range(rotate, "rotate"),
    }
    indices = seeded_indices(len(source), count, seed)
    raw, x, labels = load_images(model, source, indices)
    feature_layers = resolve_feature_layers(
        model, [v for v in layers.split(",") if v.strip()], tuple(x.shape[-2:])
    )
    norm = model.meta["normalization"]
    fill = fill_value("grey", norm["mean"], norm["std"])
    rows, data = [], {"images": raw, "image_index": indices, "label": labels}
    for kind in TRANSFORMS:
        curves = invariance_curves(model, x, labels, kind, ranges[kind], feature_layers)
        shown = _examples(ranges[kind])
        examples = image_to_display(
            torch.cat([transform_images(x[:1], kind, a, fill) for a in shown]),
            norm["mean"],
            norm["std"],
        )
        rows.append(
            CurveRow(
                NAMES[kind],
                UNITS[kind],
                curves.amounts.numpy(),
                curves.normalised.numpy(),
                curves.probability.numpy(),
                examples,
                shown,
            )
        )
        data[f"{kind}/amount"] = curves.amounts
        data[f"{kind}/distance"] = curves.distance
        data[f"{kind}/normalised_distance"] = curves.normalised
        data[f"{kind}/mean_feature_norm"] = curves.norm
        data[f"{kind}/probability"] = curves.probability
        data[f"{kind}/predicted"] = curves.predicted
        data["true_class"] = curves.label
    names = [f"#{i} {class_name(source, int(y))}" for i, y in zip(indices, labels)]
    layer_names = [fl.describe() for fl in feature_layers]
    title = (
        f"Invariance (Zeiler & Fergus Fig. 5): {len(indices)} images of "
        f"{short_description(source)} (seed {seed}); borders mid-grey\n"
        f"distance = ||f(x) - f(T(x))|| / mean ||f(x)|| over the originals, per layer; "
        f"{model_caption(model)}"
    )
    fig = invariance_figure(rows, layer_names, names, title)
    attrs = {
        "layers": layer_names,
        "seed": seed,
        "data": source.description,
        "split": source.split or "",
        "model": str(model.meta.get("path", "")),
        "model_sha256": str(model.meta.get("sha256", "")),
        "normalisation": "distance / mean over the images of the original's feature norm",
        "command_line": " ".join(sys.argv),
        "identity": str(IDENTITY),
    }
    return write_figure_files(fig, Path(out) / f"{NAME}.png", data, attrs)


if __name__ == "__main__":
    main()
