"""The ``deconvviz occlusion`` command (occlusion sensitivity, Zeiler & Fergus Figure 7)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    LAYER,
    data_option,
    device_option,
    model_option,
    resolve_device,
    source_options,
    split_option,
)

__all__ = ["occlusion"]


@click.command()
@model_option()
@data_option()
@split_option("test")
@click.option(
    "--index",
    "indices",
    type=click.IntRange(0),
    multiple=True,
    help="image to occlude (repeatable; default: 0)",
)
@click.option(
    "--layer",
    type=LAYER,
    default=2,
    show_default=True,
    help="layer number or node name whose feature's total activation is mapped",
)
@click.option(
    "--feature",
    type=click.IntRange(0),
    default=None,
    help="feature to map (default: each image's strongest feature)",
)
@click.option(
    "--size",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="side of the occluding square in pixels",
)
@click.option(
    "--stride",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="step of the square in pixels",
)
@click.option(
    "--fill",
    default="grey",
    show_default=True,
    help="'grey' (pixel 0.5), 'mean' (the training mean colour) or a pixel value in [0, 1]",
)
@device_option()
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="outputs/occlusion.png",
    show_default=True,
    help="PNG to write; the maps go to the same name with .h5",
)
def occlusion(
    checkpoint,
    data,
    workers,
    skip_unreadable,
    split,
    indices,
    layer,
    feature,
    size,
    stride,
    fill,
    device,
    out,
):
    """Occlusion sensitivity: slide a grey square over images and map the strongest
    feature's total activation, the correct class's probability and the most
    probable class (Zeiler & Fergus, Figure 7)."""
    from ..data.resolve import resolve_source
    from ..runs.figures_run import run_occlusion

    model = checkpoint.load(resolve_device(device))
    source = resolve_source(
        data, split=split, workers=workers, skip_unreadable=skip_unreadable, **source_options(model)
    )
    png, h5, _ = run_occlusion(
        model,
        source,
        list(indices) or [0],
        Path(out),
        layer=layer,
        feature=feature,
        size=size,
        stride=stride,
        fill=fill,
    )
    click.echo(f"wrote {png}")
    click.echo(f"wrote {h5}")
