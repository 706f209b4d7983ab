"""The ``deconvviz compare`` command: the same features in two or more networks (issue 20)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    LAYER,
    command_line,
    data_option,
    device_option,
    resolve_device,
    source_options,
    split_option,
)

__all__ = ["compare"]


def _label(spec: str, taken: set) -> str:
    path = Path(spec)
    base = path.stem if path.suffix in (".pt", ".pth", ".h5") else spec
    if base == "report" and path.suffix == ".h5":
        base = path.parent.name or base
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base}-{n}"
    taken.add(label)
    return label


@click.command()
@click.argument("networks", nargs=-1, required=True, metavar="A B [C ...]")
@data_option(default="builtin")
@split_option("test")
@click.option(
    "--layer",
    type=LAYER,
    required=True,
    help="layer number or node name compared (every network must have it)",
)
@click.option(
    "--top",
    type=click.IntRange(1),
    default=9,
    show_default=True,
    help="images kept per feature in each network's report",
)
@click.option(
    "--limit",
    type=click.IntRange(2),
    default=None,
    help="scan only the first N images of the source  [default: all]",
)
@click.option(
    "--min-correlation",
    type=click.FloatRange(-1, 1),
    default=0.5,
    show_default=True,
    help="matched pairs correlating less count as features without a match",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="images per forward pass of the scans  [default: chosen per model]",
)
@device_option()
@click.option(
    "--html/--no-html",
    default=True,
    show_default=True,
    help="also write each scanned network's web report (compare.html links to their feature pages)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="outputs/compare",
    show_default=True,
    help="folder for compare.h5, compare.png, compare.html and "
    "each scanned network's report (net1/, net2/, ...)",
)
@click.option("--quiet", is_flag=True, help="no progress bars")
def compare(
    networks,
    data,
    workers,
    skip_unreadable,
    split,
    layer,
    top,
    limit,
    min_correlation,
    batch_size,
    device,
    html,
    out,
    quiet,
):
    """Which features of networks A and B at one node are the same feature.

    A, B, ...: checkpoints (or any --model spec: torchvision:NAME, pkg.mod:fn) of
    networks that have the node, or report.h5 files of them made on the same data.
    Each model is scanned once over --data; features are matched by the
    correlation of their maximum per image with an optimal one-to-one assignment.
    With more than two networks (checkpoints in training order), every feature of
    the last is followed back through the earlier ones (the paper's Figure 4,
    matched rather than by index). Writes OUT/compare.h5, compare.png and
    compare.html.
    """
    from ..data.resolve import resolve_source
    from ..errors import DeconvvizError
    from ..runs.compare_run import compare_networks
    from ..runs.report_partial import ReportInterrupted
    from ..store.h5 import file_format
    from ..store.report_h5 import REPORT_FORMAT
    from .common import ModelChoice

    if len(networks) < 2:
        raise click.BadParameter("give at least two networks", param_hint="A B")
    dev = resolve_device(device)
    taken, nets, first_model = set(), [], None
    for spec in networks:
        path = Path(spec)
        if path.suffix == ".h5":
            if not path.is_file():
                raise DeconvvizError(f"report {path} does not exist")
            if file_format(path) != REPORT_FORMAT:
                raise DeconvvizError(f"{path} is not a deconvviz report (report.h5)")
            nets.append((_label(spec, taken), path))
            continue
        model = ModelChoice(spec).load(dev)
        first_model = first_model or model
        nets.append((_label(spec, taken), model))
    source = None
    if first_model is not None:
        source = resolve_source(
            data,
            split=split,
            workers=workers,
            skip_unreadable=skip_unreadable,
            **source_options(first_model),
        )
    try:
        written = compare_networks(
            nets,
            layer,
            Path(out),
            source,
            top=top,
            limit=limit,
            threshold=min_correlation,
            html=html,
            batch_size=batch_size,
            device=dev,
            progress=not quiet,
            command_line=command_line(),
        )
    except ReportInterrupted as exc:
        raise click.ClickException(str(exc)) from None
    for p in written:
        click.echo(f"wrote {p}")
