"""``deconvviz compare``: which features of two (or more) networks at one node are the
same feature, written as HDF5, PNG and a web page (issue 20).

Each network is scanned once with its report (:func:`deconvviz.runs.report_run.write_report`,
which records every image's maximum of every feature), or an existing report of it is
used; the features are then matched by the correlation of those maxima over the same
images with an optimal one-to-one assignment (:mod:`deconvviz.engine.matching`). With
more than two networks (checkpoints in training order), every feature of the last one
is followed back through the earlier ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..data.source import ImageSource
from ..engine.matching import MIN_CORRELATION, follow_back
from ..engine.net.network import graph_of, require_spatial, resolve_info
from ..errors import DeconvvizError
from ..explore import Report
from ..render.compare_figure import comparison_figure, comparison_page
from ..render.feature_stats import label_caption
from ..render.web.pages import esc, href
from ..store.atomic import atomic_paths, output_folder
from ..store.compare_h5 import COMPARE_FILE, Comparison, write_compare_h5
from ..store.report_h5 import REPORT_FILE
from .report_partial import ReportInterrupted
from .report_run import write_report

__all__ = ["compare_networks", "SHOWN"]

#: Rows drawn in the PNG and the page (every pair is in the HDF5 file).
SHOWN = 32
_TILES = 4  # top images shown per feature and network


def _check_node(label: str, model: nn.Module, layer, source: ImageSource) -> None:
    try:
        graph = graph_of(model, source.image_size)
        require_spatial(graph, resolve_info(graph, layer))
    except DeconvvizError as exc:
        raise DeconvvizError(f"network {label}: {exc}") from None


def _open(label: str, path: Path, layer) -> Tuple[Report, object]:
    rep = Report(path)
    try:
        lay = rep.layer(layer)
    except DeconvvizError as exc:
        raise DeconvvizError(f"network {label}: {exc}") from None
    if lay.stats is None:
        raise DeconvvizError(
            f"network {label}: report {path} holds no per-image maxima "
            f"(format version {rep.version}); run 'deconvviz report' again to "
            "record them, or give the model instead"
        )
    if lay.ids != list(range(lay.features)):
        raise DeconvvizError(
            f"network {label}: report {path} keeps some features of "
            f"{lay.name} only (--feature); compare matches every feature of a "
            "node: give a report of the whole node, or the model"
        )
    return rep, lay


def _same_data(opened, labels) -> None:
    a0 = opened[0][0].attrs
    for (rep, _), label in zip(opened[1:], labels[1:]):
        a = rep.attrs
        if a.get("data_fingerprint") != a0.get("data_fingerprint") or int(
            a.get("num_images", -1)
        ) != int(a0.get("num_images", -2)):
            raise DeconvvizError(
                f"networks {labels[0]} and {label} were scanned on different data "
                f"({a0.get('data_source')}, {a0.get('num_images')} images vs "
                f"{a.get('data_source')}, {a.get('num_images')} images): compare needs the "
                "same images in the same order"
            )


def _feature_link(out_dir: Path, report_path: Path, f: int) -> str:
    """Feature ``f``, linked to its page of the report's web site where the comparison
    wrote one (a report with one layer: one folder of feature pages)."""
    site = report_path.parent / "site"
    pages = sorted(site.glob(f"*/feature{f:03d}.html")) if site.is_dir() else []
    if not pages or not pages[0].is_relative_to(out_dir):
        return esc(f"#{f}")
    return f'<a href="{href(*pages[0].relative_to(out_dir).parts)}">{esc(f"#{f}")}</a>'


def compare_networks(
    networks: Sequence[Tuple[str, Union[nn.Module, Path]]],
    layer,
    out_dir: Union[str, Path],
    source: Optional[ImageSource] = None,
    *,
    top: int = 9,
    limit: Optional[int] = None,
    threshold: float = MIN_CORRELATION,
    html: bool = True,
    batch_size: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    command_line: str = "",
) -> List[Path]:
    """Match the features of ``networks`` at node ``layer`` and write ``out_dir/compare.h5``,
    ``compare.png`` and (``html``) ``compare.html``; returns the paths written.

    ``networks``: ``(label, model or report file)`` in order (checkpoints: training
    order); a model is scanned on ``source`` (its report goes to ``out_dir/net{j}/``,
    with ``html`` its web report too), a report file is used as it is. All must have the
    node and be scanned on the same images; otherwise one line and nothing written.
    ``threshold``: pairs correlating less count as unmatched.
    """
    if len(networks) < 2:
        raise DeconvvizError("compare needs at least two networks")
    labels = [label for label, _ in networks]
    for label, net in networks:  # before any scan: fail fast, write nothing
        if isinstance(net, nn.Module):
            if source is None:
                raise DeconvvizError(f"network {label} is a model: compare needs --data to scan")
            _check_node(label, net, layer, source)
    given = [
        (label, _open(label, Path(net), layer)[0])
        for label, net in networks
        if not isinstance(net, nn.Module)
    ]
    if source is not None and given:  # reports beside models: the same images, before scanning
        n = len(source) if limit is None else min(len(source), int(limit))
        for label, rep in given:
            if rep.attrs.get("data_fingerprint") != source.fingerprint or rep.num_images != n:
                raise DeconvvizError(
                    f"network {label}'s report was scanned on different data "
                    f"({rep.attrs.get('data_source')}, {rep.num_images} images) than --data "
                    f"({source.description}, {n} images): compare needs the same images"
                )
    with output_folder(out_dir) as out_dir:
        paths: List[Path] = []
        for j, (label, net) in enumerate(networks):
            if isinstance(net, nn.Module):
                try:
                    write_report(
                        net,
                        source,
                        out_dir / f"net{j + 1}",
                        [layer],
                        top,
                        batch_size=batch_size,
                        device=device,
                        progress=progress,
                        limit=limit,
                        png=False,
                        html=html,
                        command_line=f"{command_line} (network {label})",
                    )
                except KeyboardInterrupt:
                    raise _interrupted(networks, paths, j) from None
                paths.append(out_dir / f"net{j + 1}" / REPORT_FILE)
            else:
                paths.append(Path(net))
        opened = [_open(label, p, layer) for label, p in zip(labels, paths)]
        _same_data(opened, labels)
        maxima = [lay.stats.maxima for _, lay in opened]
        chains, chain_corr, matchings = follow_back(maxima, threshold)
        attrs = {
            "layer": str(layer),
            "networks": labels,
            "reports": [
                str(p.relative_to(out_dir)) if p.is_relative_to(out_dir) else str(p) for p in paths
            ],
            "data_source": str(opened[0][0].attrs.get("data_source", "")),
            "data_fingerprint": str(opened[0][0].attrs.get("data_fingerprint", "")),
            "num_images": int(opened[0][0].num_images),
            "min_correlation": float(threshold),
            "method": "Pearson correlation of per-image maxima over the same images; "
            "optimal one-to-one assignment (scipy.optimize.linear_sum_assignment)",
            "command_line": command_line,
        }
        comparison = Comparison(
            attrs=attrs,
            chains=chains,
            chain_correlation=chain_corr,
            steps=[
                {
                    "correlation": m.matrix,
                    "a": m.a,
                    "b": m.b,
                    "r": m.correlation,
                    "unmatched_a": m.unmatched_a,
                    "unmatched_b": m.unmatched_b,
                }
                for e, m in enumerate(matchings)
            ],
        )
        targets = [out_dir / COMPARE_FILE, out_dir / "compare.png"] + (
            [out_dir / "compare.html"] if html else []
        )
        rows, page_rows, columns, notes = _rows(opened, labels, comparison, out_dir, paths)
        title = (
            f"{' vs '.join(labels) if len(labels) == 2 else f'{len(labels)} networks'}"
            f" at {opened[0][1].name}: features matched by the correlation of their "
            f"maximum per image over {attrs['num_images']:,} images of "
            f"{attrs['data_source']}"
        )
        with atomic_paths(targets) as tmp:
            write_compare_h5(tmp[0], comparison)
            comparison_figure(rows, labels, title).savefig(tmp[1], format="png")
            if html:
                prov = [
                    ("node", opened[0][1].name),
                    ("networks", ", ".join(labels)),
                    ("data", f"{attrs['data_source']} ({attrs['num_images']:,} images)"),
                    ("method", attrs["method"]),
                    ("unmatched below", f"correlation {threshold:g}"),
                ]
                tmp[2].write_text(
                    comparison_page(title.split(":")[0], prov, columns, page_rows, notes),
                    encoding="utf-8",
                )
        return targets


def _tiles(rep: Report, layer, f: int) -> List[np.ndarray]:
    proj, patch = rep.feature(layer, f).tiles()
    n = min(_TILES, proj.shape[0])
    return list(proj[:n]) + list(patch[:n])


def _rows(opened, labels, comparison: Comparison, out_dir: Path, paths):
    """The rows of the PNG and of the page, the page's column titles and notes."""
    E = len(opened)
    reps = [rep for rep, _ in opened]
    lays = [lay for _, lay in opened]

    def label(j, f):
        return label_caption(lays[j].stats, f, reps[j].classes)

    rows, page_rows, notes = [], [], []
    if E == 2:
        step = comparison.steps[0]
        n = len(step["a"])
        for a, b, r in list(zip(step["a"], step["b"], step["r"]))[:SHOWN]:
            a, b = int(a), int(b)
            groups = [_tiles(reps[0], lays[0].key, a), _tiles(reps[1], lays[1].key, b)]
            rows.append((f"{labels[0]} #{a} = {labels[1]} #{b}\nr = {r:.3f}", groups))
            page_rows.append(
                (
                    [
                        _feature_link(out_dir, paths[0], a),
                        esc(label(0, a)),
                        _feature_link(out_dir, paths[1], b),
                        esc(label(1, b)),
                        f"{r:.3f}",
                    ],
                    rows[-1],
                )
            )
        columns = [
            f"{labels[0]} feature",
            "detects",
            f"{labels[1]} feature",
            "detects",
            "correlation",
            f"{labels[0]}: top projections, patches",
            f"{labels[1]}: top projections, patches",
        ]
        notes.append(
            f"{n} matched pairs"
            + (f", the {SHOWN} strongest shown" if n > SHOWN else "")
            + f" (all in {COMPARE_FILE})."
        )
        for side, name in (("unmatched_a", labels[0]), ("unmatched_b", labels[1])):
            left = step[side].tolist()
            notes.append(
                f"without a match in {name}: {', '.join(map(str, left)) if left else 'none'}"
            )
        return rows, page_rows, columns, notes
    chains, corr = comparison.chains, comparison.chain_correlation
    whole = (chains >= 0).all(axis=0)
    strength = np.where(whole, np.nan_to_num(corr, nan=0.0).min(axis=0), -1.0)
    order = [int(f) for f in np.lexsort((np.arange(chains.shape[1]), -strength))]
    for f in order[:SHOWN]:
        groups = []
        for e in range(E):
            g = int(chains[e, f])
            if g < 0:
                groups.append([None, None])
            else:
                proj, patch = reps[e].feature(lays[e].key, g).tiles()
                groups.append([proj[0], patch[0]])
        path = " <- ".join(
            f"#{int(chains[e, f])}" if chains[e, f] >= 0 else "-" for e in range(E - 1, -1, -1)
        )
        rows.append(
            (
                f"{labels[-1]} #{f}: {path}\nmin r = {strength[f]:.2f}"
                if whole[f]
                else f"{labels[-1]} #{f}: {path}",
                groups,
            )
        )
        page_rows.append(
            (
                [
                    _feature_link(out_dir, paths[-1], f),
                    esc(label(E - 1, f)),
                    esc(path),
                    f"{strength[f]:.3f}" if whole[f] else "broken",
                ],
                rows[-1],
            )
        )
    columns = [
        f"{labels[-1]} feature",
        "detects",
        "matched back (last <- first)",
        "weakest step r",
    ] + [f"{lab}: strongest projection, patch" for lab in labels]
    notes.append(
        f"{int(whole.sum())} of {chains.shape[1]} features of {labels[-1]} followed back "
        f"through every network"
        + (f"; the {SHOWN} best kept shown" if len(order) > SHOWN else "")
        + f" (all in {COMPARE_FILE})."
    )
    return rows, page_rows, columns, notes


def _interrupted(networks, paths: List[Path], j: int) -> ReportInterrupted:
    """Ctrl-C while network ``j`` was scanned: the finished reports are complete files that a
    later ``compare`` takes in place of their networks."""
    if not paths:
        return ReportInterrupted(
            "interrupted while scanning the first network; nothing was written"
        )
    kept = ", ".join(f"{networks[i][0]}: {p}" for i, p in enumerate(paths))
    return ReportInterrupted(
        f"interrupted while scanning network {networks[j][0]}; the reports of the networks "
        f"before it are complete ({kept}): give those files to compare in place of their "
        "networks to skip their scans"
    )
