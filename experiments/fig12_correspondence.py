"""Zeiler & Fergus, Table 1 and Figure 8: correspondence of object parts. In several
random draws of images of one class (dogs by default), the same region is masked
with the occlusion experiment's mid-grey in every image, and at layer 1, layer 2
and the classifier input the paper's Delta measures how consistently the feature
change (original minus masked) moves across the images: the mean over image pairs
of the fraction of features whose change has a different sign (lower = more
consistent). The control masks a box of the same size at a random place in each
image. Bars: mean over the draws, error bars: their standard deviation.

    python experiments/fig12_correspondence.py [--data D] [--model M] [--out O]
    python experiments/fig12_correspondence.py --box 4,10,16,22 --box 10,10,22,22

The measure for any images and hand-placed boxes (the paper's dogs):
``deconvviz.engine.correspondence.correspondence``.
"""

import sys
from pathlib import Path

import click
import numpy as np
import torch
from _checkout import DATA, OUT

from deconvviz.cli.experiment import experiment_command
from deconvviz.engine.correspondence import (
    check_boxes,
    correspondence,
    fraction_box,
    mask_images,
    random_boxes,
)
from deconvviz.engine.features import resolve_feature_layers
from deconvviz.engine.occlusion import fill_value
from deconvviz.errors import DeconvvizError
from deconvviz.figures import load_images
from deconvviz.render.display import image_to_display
from deconvviz.render.figures import model_caption, short_description
from deconvviz.render.paper import correspondence_figure
from deconvviz.store.figure import write_figure_files

NAME = "fig12_correspondence"
# (name, box as fractions (y0, x0, y1, x1) of the image): 12x12 pixels on 32x32.
REGIONS = (
    ("upper left", (0.0, 0.0, 0.375, 0.375)),
    ("upper centre", (0.125, 0.3125, 0.5, 0.6875)),
    ("centre", (0.3125, 0.3125, 0.6875, 0.6875)),
)

__all__ = ["main"]


def _parse_box(text):
    try:
        box = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise DeconvvizError(
            f"--box {text!r} is not Y0,X0,Y1,X1 (four whole numbers, pixels, end exclusive)"
        )
    return box


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--class", "class_name", default="dog", show_default=True, help="class whose images are masked"
)
@click.option(
    "--images",
    type=click.IntRange(2),
    default=5,
    show_default=True,
    help="images per draw (the paper: 5 dogs)",
)
@click.option(
    "--draws",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="random draws of images (and of the random boxes)",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="seed of the draws and of the random boxes",
)
@click.option(
    "--box",
    "boxes",
    multiple=True,
    metavar="Y0,X0,Y1,X1",
    help="a region to mask, in pixels (end exclusive), the same in every image; "
    "repeatable  [default: upper left, upper centre and centre 12x12 boxes]",
)
@click.option(
    "--layers",
    default="1,2,classifier",
    show_default=True,
    help="comma-separated conv layer numbers and/or 'classifier' (the input of the last Linear)",
)
def main(model, source, out, class_name, images, draws, seed, boxes, layers):
    """Correspondence of image regions across images of one class (paper Table 1, Fig. 8)."""
    size = source.image_size
    if boxes:
        regions = [(f"box {','.join(map(str, _parse_box(b)))}", _parse_box(b)) for b in boxes]
    else:
        regions = [(name, fraction_box(frac, size)) for name, frac in REGIONS]
    for _, box in regions:
        check_boxes([box], 1, size)
    feature_layers = resolve_feature_layers(
        model, [v for v in layers.split(",") if v.strip()], size
    )
    if class_name not in source.class_names:
        raise DeconvvizError(
            f"{source.description} has no class {class_name!r} (classes: "
            f"{', '.join(source.class_names) or 'none, unlabelled'})"
        )
    pool = torch.nonzero(source.labels == source.class_names.index(class_name)).view(-1)
    if pool.numel() < images:
        raise DeconvvizError(
            f"{source.description} has {pool.numel()} images of class "
            f"{class_name!r}; --images {images} asks for more"
        )
    names = [n for n, _ in regions] + ["random place"]
    nreg, nlay = len(names), len(feature_layers)
    mean_frac = np.zeros((nreg, nlay, draws))
    total = np.zeros((nreg, nlay, draws), dtype=np.int64)
    chosen = np.zeros((draws, images), dtype=np.int64)
    used_boxes = np.zeros((nreg, draws, images, 4), dtype=np.int64)
    g = torch.Generator().manual_seed(int(seed))
    for d in range(draws):
        idx = sorted(pool[torch.randperm(pool.numel(), generator=g)[:images]].tolist())
        chosen[d] = idx
        _, x, _ = load_images(model, source, idx)
        per_region = [torch.tensor([box] * images) for _, box in regions]
        # The control: boxes of the first region's size, each at its own random place.
        per_region.append(random_boxes(per_region[0], size, g))
        for r, bxs in enumerate(per_region):
            res = correspondence(model, x, bxs, feature_layers)
            used_boxes[r, d] = bxs.numpy()
            for li, fl in enumerate(feature_layers):
                mean_frac[r, li, d] = res.scores[fl].mean
                total[r, li, d] = res.scores[fl].total
    # Examples: the first draw's images, masked as measured.
    norm = model.meta["normalization"]
    fill = fill_value("grey", norm["mean"], norm["std"])
    _, x0, _ = load_images(model, source, chosen[0].tolist())
    examples = np.stack(
        [
            image_to_display(
                mask_images(x0, torch.as_tensor(used_boxes[r, 0]), fill), norm["mean"], norm["std"]
            )
            for r in range(nreg)
        ]
    )
    layer_names = [fl.describe() for fl in feature_layers]
    mean, spread = mean_frac.mean(axis=2), mean_frac.std(axis=2)
    title = (
        f"Correspondence (Zeiler & Fergus Table 1, Fig. 8): {images} '{class_name}' images "
        f"of {short_description(source)} per draw, {draws} draws (seed {seed})\n"
        f"the same region masked grey in each image, vs. a box of that size at random "
        f"places; Delta = mean over image pairs of the fraction of features\nwhose change "
        f"(original - masked) differs in sign; lower = more consistent; bars: mean over "
        f"draws, error bars and ±: std over draws; {model_caption(model)}"
    )
    fig = correspondence_figure(
        names,
        layer_names,
        mean,
        spread,
        examples,
        title,
        note="left: the first draw's images as masked",
    )
    data = {
        "delta": mean_frac,
        "delta_sum": total,
        "delta_mean": mean,
        "delta_std": spread,
        "image_index": chosen,
        "boxes": used_boxes,
    }
    attrs = {
        "regions": names,
        "layers": layer_names,
        "class": class_name,
        "images": images,
        "draws": draws,
        "seed": seed,
        "data": source.description,
        "split": source.split or "",
        "model": str(model.meta.get("path", "")),
        "model_sha256": str(model.meta.get("sha256", "")),
        "delta": "mean over unordered image pairs of Hamming(sign eps_i, sign eps_j) / D",
        "delta_sum": "sum over ordered pairs i != j of Hamming(sign eps_i, sign eps_j)",
        "command_line": " ".join(sys.argv),
    }
    return write_figure_files(fig, Path(out) / f"{NAME}.png", data, attrs)


if __name__ == "__main__":
    main()
