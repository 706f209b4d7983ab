"""The ``deconvviz filters`` command: a layer's filters sorted by RMS and the features
that never fire on a data source (Zeiler & Fergus, arXiv 1311.2901, Figure 6)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    command_line,
    data_option,
    device_option,
    model_option,
    resolve_device,
    source_options,
    split_option,
)

__all__ = ["filters"]


@click.command()
@model_option()
@click.option(
    "--layer",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="conv layer whose filters are drawn (from 1; see 'deconvviz layers')",
)
@data_option(None)
@split_option("test")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="scan only the first N images of --data  [default: all]",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="images per forward pass of the scan",
)
@click.option(
    "--columns", type=click.IntRange(1), default=8, show_default=True, help="tiles per row"
)
@device_option()
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="outputs/filters.png",
    show_default=True,
    help="PNG to write; the numbers go to the same name with .h5",
)
def filters(
    checkpoint,
    layer,
    data,
    workers,
    skip_unreadable,
    split,
    limit,
    batch_size,
    columns,
    device,
    out,
):
    """Draw a conv layer's filters sorted by RMS, with the RMS under each (layer 1
    as RGB tiles, deeper layers as the mean over input channels, each tile scaled
    symmetrically around zero), so a dominating or dead filter shows at once; with
    --data, also list the features that never fire on that source."""
    from ..data.resolve import resolve_source
    from ..engine.net.layers import get_layer
    from ..runs.figures_run import run_filters

    device = resolve_device(device)
    model = checkpoint.load(device)
    get_layer(model, layer)  # a bad --layer fails before any data is read
    source = None
    if data is not None:
        source = resolve_source(
            data,
            split=split,
            workers=workers,
            skip_unreadable=skip_unreadable,
            **source_options(model),
        )
    paths, found, dead = run_filters(
        model,
        layer,
        Path(out),
        source=source,
        limit=limit,
        batch_size=batch_size,
        device=device,
        columns=columns,
        command_line=command_line(),
    )
    ranked = ", ".join(f"{int(f)}: {float(found.rms[f]):.4f}" for f in found.order[:5])
    click.echo(
        f"layer {found.layer} ({found.path}): {len(found.order)} filters; largest RMS "
        f"{ranked}{' ...' if len(found.order) > 5 else ''}"
    )
    if dead is not None:
        never = ", ".join(str(int(f)) for f in dead.dead)
        click.echo(
            f"features that never fire on {source.description} ({dead.num_images} "
            f"images): {never or 'none'}"
        )
    for path in paths:
        click.echo(f"wrote {path}")
