"""The ``report`` and ``render`` commands (registered on the ``deconvviz`` group in
:mod:`deconvviz.cli`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..engine.variants import RULES
from ..errors import DeconvvizError
from ..store.report_h5 import PROJECTION_DTYPES
from .common import (
    LAYER,
    command_line,
    data_option,
    device_option,
    model_option,
    resolve_device,
    source_options,
    split_option,
)

__all__ = ["report", "render", "FEATURES"]


class FeatureRange(click.ParamType):
    """A feature (channel) number from 0, or an inclusive range ``0-15``."""

    name = "F|A-B"

    def convert(self, value, param, ctx):
        if isinstance(value, range):
            return value
        text = str(value).strip()
        first, sep, last = text.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            self.fail(f"expected a feature number or a range like 0-15, got {value!r}", param, ctx)
        if lo < 0 or hi < lo:
            self.fail(
                f"expected a feature number (from 0) or a range A-B with A <= B, got {value!r}",
                param,
                ctx,
            )
        return range(lo, hi + 1)


FEATURES = FeatureRange()


def _echo_written(paths, out_dir: Path) -> None:
    pngs = [p for p in paths if p.suffix == ".png"]
    for p in paths:
        # One line per HDF5 file and per layer grid; per-feature PNGs summarised per folder.
        if p.suffix != ".png" or p.parent == out_dir:
            click.echo(f"wrote {p}")
    folders = sorted({p.parent for p in pngs if p.parent != out_dir})
    for d in folders:
        n = sum(1 for p in pngs if p.parent == d)
        click.echo(f"wrote {n} feature PNGs in {d}")


@click.command()
@model_option()
@data_option()
@split_option("test")
@click.option(
    "--layer",
    "layers",
    type=LAYER,
    multiple=True,
    help="layer number or node name to report (repeatable)  [default: every conv "
    "layer of a plain stack, else every node 'deconvviz layers' lists]",
)
@click.option(
    "--feature",
    "features",
    type=FEATURES,
    multiple=True,
    help="report only this feature (channel, from 0) of each layer, or a range "
    "like 0-15 (repeatable)  [default: every feature]",
)
@click.option(
    "--top",
    "k",
    type=click.IntRange(1),
    default=9,
    show_default=True,
    help="images kept per feature (at most the number of images scanned)",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="images per forward pass of the scan  [default: chosen for the model "
    "and image size, 128 for the bundled CNN]",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="scan only the first N images of the source (of a folder, only they are "
    "decoded)  [default: all]",
)
@device_option()
@click.option(
    "--rule",
    type=click.Choice(RULES),
    default="deconvnet",
    show_default=True,
    help="how the projection passes ReLUs (the paper: deconvnet)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="outputs/report",
    show_default=True,
    help="folder for report.h5 and the PNGs",
)
@click.option(
    "--png/--no-png",
    default=True,
    show_default=True,
    help="also draw the PNGs (they can be redrawn later with 'deconvviz render')",
)
@click.option(
    "--projection-dtype",
    type=click.Choice(PROJECTION_DTYPES),
    default="float32",
    show_default=True,
    help="how projections are stored (float16 halves the file)",
)
@click.option(
    "--resume",
    is_flag=True,
    help="continue an interrupted report from what OUT keeps: the scan's state, "
    "then the finished layers of OUT/report.h5.partial",
)
@click.option(
    "--save-every",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="save the scan's state every N batches (for --resume)",
)
@click.option(
    "--html",
    is_flag=True,
    help="also write the browsable web report OUT/site/ (open OUT/site/index.html)",
)
@click.option("--quiet", is_flag=True, help="no progress bars")
def report(
    checkpoint,
    data,
    workers,
    skip_unreadable,
    split,
    layers,
    features,
    k,
    batch_size,
    limit,
    device,
    rule,
    out,
    png,
    projection_dtype,
    resume,
    save_every,
    html,
    quiet,
):
    """Top-K images of every feature over a whole data set (the paper's Figure 2).

    Scans the data once, keeps for each feature of the chosen layers the K
    images on which it fires most, projects each back to pixels with that
    image's switches, and writes OUT/report.h5 plus one PNG grid per layer and
    one PNG per feature. Runs under 'torchrun --nproc_per_node N' too: each
    process scans a share and rank 0 writes. Each phase shows its progress (plain
    lines in a log). The scan's state is saved every --save-every batches and each
    layer is added to OUT/report.h5.partial when it is finished; after Ctrl-C, a
    crash or a killed process, the same command with --resume continues from the
    last finished layer (or within the scan). OUT/report.h5 and the PNGs replace an
    earlier report only once all are complete.
    """
    from ..data.preprocess import Preprocessing
    from ..data.resolve import resolve_source
    from ..engine.distributed import distributed_context
    from ..engine.net.network import graph_of, require_spatial, resolve_info
    from ..runs.report_partial import ReportInterrupted
    from ..runs.report_run import write_report
    from ..runs.report_scan import check_features
    from ..store.atomic import output_folder

    chosen = sorted({f for r in features for f in r}) if features else None
    device = resolve_device(device)
    out_dir = Path(out)
    written = None
    try:
        # Under torchrun every rank runs the same stages; at the end of each they agree
        # whether all succeeded, so an error on one rank stops every rank with one line,
        # and no rank leaves the process group while rank 0 is still writing.
        with (
            distributed_context(device) as ranks,
            output_folder(out_dir) if ranks.writer else contextlib.nullcontext(),
        ):
            # (a folder this run created is removed again if the run is refused)
            with ranks.stage("setup"):
                model = checkpoint.load(ranks.device)
                size = Preprocessing.from_meta(model.meta).size
                # Before reading (maybe decoding) the data: fail fast.
                graph = graph_of(model, size)
                infos = [resolve_info(graph, L) for L in layers]
                for info in infos:
                    require_spatial(graph, info)
                check_features(infos, chosen)
                if ranks.writer:  # rank 0 decodes (and caches) the images first ...
                    source = resolve_source(
                        data,
                        split=split,
                        workers=workers,
                        skip_unreadable=skip_unreadable,
                        limit=limit,
                        **source_options(model),
                    )
            with ranks.stage("reading the data"):
                if not ranks.writer:  # ... the others then read the cache
                    source = resolve_source(
                        data,
                        split=split,
                        workers=workers,
                        skip_unreadable=skip_unreadable,
                        limit=limit,
                        **source_options(model),
                    )
            with ranks.stage("the report"):  # rank 0 writes; the others wait here for it
                written = write_report(
                    model,
                    source,
                    out_dir,
                    list(layers) or None,
                    k,
                    batch_size=batch_size,
                    device=ranks.device,
                    rule=rule,
                    progress=not quiet,
                    limit=limit,
                    ranks=ranks,
                    command_line=command_line(),
                    png=png,
                    projection_dtype=projection_dtype,
                    resume=resume,
                    save_every=save_every,
                    html=html,
                    features=chosen,
                )
    except ReportInterrupted as exc:
        raise click.ClickException(str(exc)) from None
    if written is not None:
        _echo_written(written, out_dir)


@click.command()
@click.argument("report_file", metavar="FILE.h5", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="folder for the PNGs  [default: the file's folder]",
)
@click.option(
    "--html",
    is_flag=True,
    help="write a report's browsable web report OUT/site/ instead of the PNGs",
)
def render(report_file, out, html):
    """Redraw the PNGs of a deconvviz HDF5 file alone (no model, no data): a report
    (report.h5) or a projection file of 'deconvviz project'; with --html, a report's
    web report instead."""
    from ..runs.figures_run import render_projection
    from ..runs.report_render import render_report
    from ..store.atomic import check_writable_dir
    from ..store.h5 import file_format
    from ..store.projection_h5 import PROJECTION_FORMAT, read_projection_h5
    from ..store.report_h5 import REPORT_FORMAT
    from ..store.report_read import open_report

    path = Path(report_file)
    out_dir = Path(out) if out else (path.parent if str(path.parent) else Path("."))
    fmt = file_format(path) if path.is_file() else None
    if fmt and fmt.startswith("deconvviz-") and fmt not in (REPORT_FORMAT, PROJECTION_FORMAT):
        raise DeconvvizError(
            f"{path} is a {fmt} file; render redraws {REPORT_FORMAT} and "
            f"{PROJECTION_FORMAT} files (others are drawn when written)"
        )
    if html:
        if fmt == PROJECTION_FORMAT:
            raise DeconvvizError(
                f"{path} is a {fmt} file; --html makes the web report of a "
                f"{REPORT_FORMAT} file (report.h5)"
            )
        from ..render.web import write_site

        click.echo(f"wrote {write_site(path, out_dir)}")
        return
    if fmt == PROJECTION_FORMAT:
        data = read_projection_h5(path)  # checks format and version
        png = render_projection(data, check_writable_dir(out_dir) / f"{path.stem}.png")
        click.echo(f"wrote {png}")
        return
    with open_report(path) as rep:  # layers read one feature at a time
        if not rep.layers:
            raise DeconvvizError(f"report {path} holds no layers")
        _echo_written(render_report(rep, out_dir), out_dir)
