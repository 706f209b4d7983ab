"""The ``deconvviz features`` command: what the features of a report detect (issue 20)."""

from __future__ import annotations

import click

from .common import LAYER

__all__ = ["features"]


def _p(p: float) -> str:
    return "< 1e-300" if p < 1e-300 else f"{p:.2g}"


@click.command()
@click.argument("report_file", metavar="REPORT.h5", type=click.Path(dir_okay=False))
@click.option(
    "--class",
    "class_name",
    default=None,
    help="list the features that detect this class, strongest (highest AUROC) first",
)
@click.option(
    "--feature",
    type=click.IntRange(0),
    default=None,
    help="say what feature N detects (with --layer where the report has several)",
)
@click.option(
    "--layer",
    type=LAYER,
    default=None,
    help="layer number or node name  [default: every layer; --feature needs it "
    "where the report has several]",
)
@click.option(
    "--limit", type=click.IntRange(1), default=None, help="list at most N features  [default: all]"
)
def features(report_file, class_name, feature, layer, limit):
    """What the features of a report detect, from the data set's own labels.

    Each feature's label is the class whose images it separates best (highest
    AUROC of its maximum per image) among the classes where a one-sided
    Mann-Whitney test, Holm-corrected over the classes, is significant at 0.05;
    'no class' where none is. Without --class or --feature: how many features of
    each layer detect each class.
    """
    from ..errors import DeconvvizError
    from ..explore import Report

    if class_name is not None and feature is not None:
        raise click.BadParameter("give --class or --feature, not both", param_hint="--class")
    rep = Report(report_file)
    if layer is not None:
        rep.layer(layer)  # an unknown layer: one line naming the report's layers
    if feature is not None:
        if layer is None and len(rep.layers) > 1:
            raise DeconvvizError(
                f"--feature needs --layer: report {rep.path} has layers "
                f"{', '.join(lay.name for lay in rep.layers.values())}"
            )
        lay = rep.layer(layer) if layer is not None else next(iter(rep.layers.values()))
        _one_feature(rep, lay.feature(feature))
        return
    if class_name is not None:
        found = rep.features_for(class_name, layer)
        c = rep.class_index(class_name)
        name = rep.classes[c]
        if not found:
            click.echo(
                f"no feature detects {name} (of {sum(lay.features for lay in rep.layers.values())} "
                f"features; AUROC with Holm-corrected Mann-Whitney p < "
                f"{next(iter(rep.layers.values())).stats.alpha:g})"
            )
            return
        click.echo(
            f"{len(found)} feature{'s detect' if len(found) > 1 else ' detects'} {name}, "
            "strongest first "
            "(AUROC of the maximum per image; p: one-sided Mann-Whitney, Holm over "
            "the classes; top k: share of the top images of the class):"
        )
        for ft in found[:limit]:
            s, f = ft.stats, ft.row
            click.echo(
                f"  {ft.layer.name} feature {ft.index}: AUROC {s.auroc[f, c]:.3f}, p "
                f"{_p(s.p_adjusted[f, c])}, top {ft.layer.k} {100 * s.topk_share[f, c]:.0f}%, "
                f"fires on {100 * s.firing_rate[f]:.1f}% of images"
            )
        return
    rep.require_statistics()
    layers = [rep.layer(layer)] if layer is not None else list(rep.layers.values())
    for lay in layers:
        counts = {}
        for c in lay.stats.label:
            counts[int(c)] = counts.get(int(c), 0) + 1
        named = sorted(((n, c) for c, n in counts.items() if c >= 0), key=lambda t: (-t[0], t[1]))
        text = ", ".join(f"{rep.classes[c] if c < len(rep.classes) else c} {n}" for n, c in named)
        click.echo(
            f"{lay.name}: {lay.features} features, {counts.get(-1, 0)} no class"
            + (f"; {text}" if text else "")
        )


def _one_feature(rep, ft) -> None:
    import numpy as np

    from ..store.statistics_h5 import statistics_absent

    click.echo(f"{ft.layer.name} feature {ft.index}: {ft.describe().split(': ', 1)[1]}")
    acts = ", ".join(
        f"{int(i)} ({rep.classes[int(c)] if 0 <= c < len(rep.classes) else '?'}, {float(a):.3g})"
        for i, c, a in zip(ft.image_index, ft.labels, ft.activation)
    )
    click.echo(f"  top {ft.layer.k} images (class, activation): {acts}")
    if ft.stats is None:
        click.echo(f"  {statistics_absent(rep.path, rep.version)}")
        return
    s, f = ft.stats, ft.row
    q = ", ".join(f"{100 * lv:g}% {v:.3g}" for lv, v in zip(s.quantile_levels, s.quantiles[f]))
    click.echo(
        f"  fires on {100 * s.firing_rate[f]:.1f}% of {s.maxima.shape[1]:,} images; mean "
        f"maximum {s.mean[f]:.4g}; quantiles {q}"
    )
    click.echo("  class: AUROC, p (Holm), share of the top images")
    for c in sorted(range(s.classes), key=lambda c: (-np.nan_to_num(s.auroc[f, c], nan=-1.0), c)):
        mark = "  <- label" if c == int(s.label[f]) else ""
        name = rep.classes[c] if c < len(rep.classes) else f"class {c}"
        auroc = "-" if np.isnan(s.auroc[f, c]) else f"{s.auroc[f, c]:.3f}"
        p = "-" if np.isnan(s.p_adjusted[f, c]) else _p(s.p_adjusted[f, c])
        click.echo(f"    {name}: {auroc}, {p}, {100 * s.topk_share[f, c]:.0f}%{mark}")
