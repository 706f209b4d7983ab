"""The ``report`` and ``render`` commands (registered on the ``deconvviz`` group in :mod:`deconvviz.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..engine.variants import RULES
from ..errors import DeconvvizError
from ..store.report import PROJECTION_DTYPES
from .common import (LAYER, command_line, data_option, device_option, model_option, resolve_device,
                     source_options, split_option)

__all__ = ["report", "render"]


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
@click.option("--layer", "layers", type=LAYER, multiple=True,
              help="layer number or node name to report (repeatable)  [default: every conv "
                   "layer of a plain stack, else every node 'deconvviz layers' lists]")
@click.option("--top", "k", type=click.IntRange(1), default=9, show_default=True,
              help="images kept per feature")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="images per forward pass of the scan  [default: chosen for the model "
                   "and image size, 128 for the bundled CNN]")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="scan only the first N images of the source  [default: all]")
@device_option()
@click.option("--rule", type=click.Choice(RULES), default="deconvnet", show_default=True,
              help="how the projection passes ReLUs (the paper: deconvnet)")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/report",
              show_default=True, help="folder for report.h5 and the PNGs")
@click.option("--png/--no-png", default=True, show_default=True,
              help="also draw the PNGs (they can be redrawn later with 'deconvviz render')")
@click.option("--projection-dtype", type=click.Choice(PROJECTION_DTYPES), default="float32",
              show_default=True, help="how projections are stored (float16 halves the file)")
@click.option("--resume", is_flag=True,
              help="continue an interrupted scan from the state saved in OUT")
@click.option("--save-every", type=click.IntRange(1), default=20, show_default=True,
              help="save the scan's state every N batches (for --resume)")
@click.option("--html", is_flag=True,
              help="also write the browsable web report OUT/site/ (open OUT/site/index.html)")
@click.option("--quiet", is_flag=True, help="no progress bars")
def report(checkpoint, data, workers, skip_unreadable, split, layers, k, batch_size, limit, device, rule, out, png,
           projection_dtype, resume, save_every, html, quiet):
    """Top-K images of every feature over a whole data set (the paper's Figure 2).

    Scans the data once, keeps for each feature of the chosen layers the K
    images on which it fires most, projects each back to pixels with that
    image's switches, and writes OUT/report.h5 plus one PNG grid per layer and
    one PNG per feature. Runs under 'torchrun --nproc_per_node N' too: each
    process scans a share and rank 0 writes. The scan's state is saved every
    --save-every batches; after Ctrl-C, a crash or a killed process, the same
    command with --resume continues it.
    """
    from ..data.sources import resolve_source
    from ..engine.distributed import distributed_context
    from ..data.preprocess import Preprocessing
    from ..engine.network import require_spatial, resolve_info
    from ..report import scan_state_path, write_report
    from ..store.atomic import check_writable_dir

    device = resolve_device(device)
    out_dir = Path(out)
    written = None
    try:
        # Under torchrun every rank runs the same stages; at the end of each they agree
        # whether all succeeded, so an error on one rank stops every rank with one line,
        # and no rank leaves the process group while rank 0 is still writing.
        with distributed_context(device) as ranks:
            with ranks.stage("setup"):
                if ranks.writer:
                    check_writable_dir(out_dir)
                model = checkpoint.load(ranks.device)
                size = Preprocessing.from_meta(model.meta).size
                for L in layers:  # before reading (maybe decoding) the data: fail fast
                    require_spatial(model, resolve_info(model, L, size))
                if ranks.writer:  # rank 0 decodes (and caches) the images first ...
                    source = resolve_source(data, split=split, workers=workers, skip_unreadable=skip_unreadable,
                                           **source_options(model))
            with ranks.stage("reading the data"):
                if not ranks.writer:  # ... the others then read the cache
                    source = resolve_source(data, split=split, workers=workers, skip_unreadable=skip_unreadable,
                                           **source_options(model))
            with ranks.stage("the report"):  # rank 0 writes; the others wait here for it
                written = write_report(model, source, out_dir, list(layers) or None, k,
                                       batch_size=batch_size, device=ranks.device, rule=rule,
                                       progress=not quiet, limit=limit, ranks=ranks,
                                       command_line=command_line(), png=png,
                                       projection_dtype=projection_dtype, resume=resume,
                                       save_every=save_every, html=html)
    except KeyboardInterrupt:
        saved = scan_state_path(out_dir)
        if saved.is_file():
            raise click.ClickException(
                f"interrupted; nothing was written; the scan so far is saved in {saved}: run "
                "the same command with --resume to continue") from None
        raise
    if written is not None:
        _echo_written(written, out_dir)


@click.command()
@click.argument("report_file", metavar="FILE.h5", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="folder for the PNGs  [default: the file's folder]")
@click.option("--html", is_flag=True,
              help="write a report's browsable web report OUT/site/ instead of the PNGs")
def render(report_file, out, html):
    """Redraw the PNGs of a deconvviz HDF5 file alone (no model, no data): a report
    (report.h5) or a projection file of 'deconvviz project'; with --html, a report's
    web report instead."""
    from ..figures import render_projection
    from ..report import render_report
    from ..store.atomic import check_writable_dir
    from ..store.h5 import file_format
    from ..store.projection import PROJECTION_FORMAT, read_projection_h5
    from ..store.report import REPORT_FORMAT, open_report

    path = Path(report_file)
    out_dir = Path(out) if out else (path.parent if str(path.parent) else Path("."))
    fmt = file_format(path) if path.is_file() else None
    if fmt and fmt.startswith("deconvviz-") and fmt not in (REPORT_FORMAT, PROJECTION_FORMAT):
        raise DeconvvizError(f"{path} is a {fmt} file; render redraws {REPORT_FORMAT} and "
                             f"{PROJECTION_FORMAT} files (others are drawn when written)")
    if html:
        if fmt == PROJECTION_FORMAT:
            raise DeconvvizError(f"{path} is a {fmt} file; --html makes the web report of a "
                                 f"{REPORT_FORMAT} file (report.h5)")
        from ..render.web import write_site
        click.echo(f"wrote {write_site(path, out_dir)}")
        return
    if fmt == PROJECTION_FORMAT:
        data = read_projection_h5(path)        # checks format and version
        png = render_projection(data, check_writable_dir(out_dir) / f"{path.stem}.png")
        click.echo(f"wrote {png}")
        return
    with open_report(path) as rep:        # layers read one feature at a time
        if not rep.layers:
            raise DeconvvizError(f"report {path} holds no layers")
        _echo_written(render_report(rep, out_dir), out_dir)
