"""Research figures and single projection runs: orchestration over engine, store and render.

Each experiment script in ``experiments/`` is a short click command made with
:func:`deconvviz.cli.experiment.experiment_command`; the work it shares with
the others lives here: choosing images (seeded), projecting every feature of a
layer or one feature over many images, cutting projections to receptive
fields, the occlusion run, and the ``project`` command's PNG + HDF5 pair.
Every projection is displayed with :func:`deconvviz.render.display.to_display`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .data.source import ImageSource, normalize
from .engine.deconv.deconvnet import deconvolve
from .engine.net.geometry import receptive_box, windows_for
from .engine.net.layers import get_layer
from .engine.occlusion import occlusion_maps
from .errors import DeconvvizError
from .render.display import image_to_display, pairs_figure, save_figure, to_display
from .render.figures import class_name, mode_text, model_caption, short_description, tiles_figure
from .render.occlusion import occlusion_figure
from .render.projection import projection_figure
from .store.atomic import atomic_paths, check_writable_dir
from .store.occlusion import write_occlusion_h5
from .store.projection import write_projection_h5

__all__ = [
    "find_class_image",
    "seeded_indices",
    "load_images",
    "all_features_figure",
    "across_images_figure",
    "receptive_crops",
    "run_occlusion",
    "save_projection",
    "run_filters",
]


def find_class_image(source: ImageSource, class_name: str, nth: int = 0) -> int:
    """Index of the ``nth`` (from 0) image of class ``class_name`` in ``source``."""
    if class_name not in source.class_names:
        raise DeconvvizError(
            f"{source.description} has no class {class_name!r} (classes: "
            f"{', '.join(source.class_names) or 'none, unlabelled'})"
        )
    hits = torch.nonzero(source.labels == source.class_names.index(class_name)).view(-1)
    if nth < 0 or nth >= hits.numel():
        raise DeconvvizError(
            f"{source.description} has {hits.numel()} images of class "
            f"{class_name!r}; asked for number {nth} (from 0)"
        )
    return int(hits[nth])


def seeded_indices(n: int, k: int, seed: int) -> List[int]:
    """``min(k, n)`` distinct indices of ``range(n)``, chosen at random with ``seed``, sorted."""
    if n < 1:
        raise DeconvvizError("the data source has no images")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=g)[: min(k, n)].tolist())


def load_images(model: nn.Module, source: ImageSource, indices: Sequence[int]):
    """``(uint8 (n, 3, H, W), model input (n, 3, H, W), labels (n,))`` of images ``indices``."""
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(source)]
    if bad:
        raise DeconvvizError(
            f"image index {bad[0]} is out of range 0..{len(source) - 1} ({source.description})"
        )
    raw = source.read_indices(indices)
    norm = model.meta["normalization"]
    return raw, normalize(raw, norm["mean"], norm["std"]), source.labels[indices]


def all_features_figure(
    model: nn.Module,
    raw: torch.Tensor,
    x: torch.Tensor,
    layer: int,
    caption: str,
    mode: str = "map",
    rule: str = "deconvnet",
    unpool: str = "switches",
    columns: Optional[int] = None,
):
    """Every feature of ``layer`` projected for one image (source material, figures 1 and 4).

    ``raw``: ``uint8`` ``(1, 3, H, W)``; ``x``: its model input. Returns
    ``(Figure, Projection)``; the first tile is the image, then feature ``k``'s
    projection labelled with ``k`` and its (maximum) activation.
    """

    nfeat = get_layer(model, layer, tuple(x.shape[-2:])).features
    proj = deconvolve(
        model,
        x,
        layer,
        torch.arange(nfeat),
        torch.zeros(nfeat, dtype=torch.int64),
        mode=mode,
        rule=rule,
        unpool=unpool,
    )
    tiles = np.concatenate([image_to_display(raw), to_display(proj.projections)])
    labels = [caption] + [f"f{k}  max {float(a):.2f}" for k, a in enumerate(proj.activation)]
    title = (
        f"Layer {layer}: all {nfeat} features (0-based) projected for {caption}\n"
        f"seed: {mode_text(mode)}; rule {rule}, unpool {unpool}; {model_caption(model)}"
    )
    if columns is None:
        fits = [c for c in range(8, 14) if len(tiles) % c == 0]
        columns = fits[0] if fits else 8
    return tiles_figure(tiles, labels, title, columns=columns), proj


def across_images_figure(
    model: nn.Module,
    source: ImageSource,
    indices: Sequence[int],
    layer: int,
    feature: int,
    mode: str = "map",
    rule: str = "deconvnet",
    unpool: str = "switches",
    columns: int = 4,
):
    """One feature projected for many images, each image beside its projection
    (source material, figures 2 and 5). Returns ``(Figure, Projection, uint8 images)``."""

    raw, x, labels = load_images(model, source, indices)
    proj = deconvolve(model, x, layer, feature, mode=mode, rule=rule, unpool=unpool)
    names = [
        f"#{i} {class_name(source, int(y))}\nmax {float(a):.2f}"
        for i, y, a in zip(indices, labels, proj.activation)
    ]
    title = (
        f"Layer {layer}, feature {feature} (0-based) for {len(indices)} images of "
        f"{short_description(source)} (image | projection)\nseed: {mode_text(mode)}; rule {rule}, "
        f"unpool {unpool}; {model_caption(model)}"
    )
    fig = pairs_figure(
        image_to_display(raw), to_display(proj.projections), names, title, columns=columns
    )
    fig.subplots_adjust(top=1 - 0.75 / fig.get_figheight())  # room for the two-line title
    return fig, proj, raw


def receptive_crops(projections: torch.Tensor, info, positions: torch.Tensor) -> List[np.ndarray]:
    """Raw projections ``(S, 3, H, W)`` cut to the receptive field of each seed's
    activation ``positions`` ``(S, 2)`` in layer ``info`` (a :class:`LayerInfo`), each
    crop then put in display form with :func:`~deconvviz.render.to_display`
    (so its contrast is set by the crop itself). Returns ``S`` arrays ``(h, w, 3)``."""

    crops = []
    for p, pos in zip(projections, positions.tolist()):
        y0, x0, y1, x1 = receptive_box(info, pos, tuple(p.shape[-2:]))
        crops.append(to_display(p[:, y0:y1, x0:x1]))
    return crops


def run_occlusion(
    model,
    source,
    indices,
    out_png: Path,
    *,
    layer: int = 2,
    feature=None,
    size: int = 8,
    stride: int = 2,
    fill="grey",
    title_extra: str = "",
):
    """Occlusion maps of images ``indices`` of ``source``; write ``out_png`` and the same
    path with suffix ``.h5`` atomically. Returns ``(png, h5, maps)``."""

    classes = list(model.meta.get("class_names") or [])
    if source.class_names and classes and list(source.class_names) != classes:
        raise DeconvvizError(
            f"{source.description} has classes {', '.join(source.class_names)}; "
            f"the model {', '.join(classes)} (the correct class is ambiguous)"
        )
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(source)]
    if bad:
        raise DeconvvizError(
            f"image index {bad[0]} is out of range 0..{len(source) - 1} ({source.description})"
        )
    out_png = Path(out_png)
    check_writable_dir(out_png.parent if str(out_png.parent) else Path("."))
    out_h5 = out_png.with_suffix(".h5")
    norm = model.meta["normalization"]
    raw = source.read_indices(indices)
    x = normalize(raw, norm["mean"], norm["std"]).to(next(model.parameters()).device)
    labels = source.labels[indices]
    maps = occlusion_maps(
        model, x, labels, layer=layer, feature=feature, size=size, stride=stride, fill=fill
    )
    classes = classes or source.class_names
    captions = [f"#{i}" for i in indices]
    fill_desc = maps.fill_name if maps.fill_name in ("grey", "mean") else f"pixel {maps.fill_name}"
    parts = Path(source.description).parts
    where = "/".join(parts[-2:]) if len(parts) > 2 else source.description
    title = (
        f"Occlusion sensitivity (Zeiler & Fergus Fig. 7): {size}x{size} {fill_desc} square, "
        f"stride {stride}; {where}{title_extra}\nmaps: value with the square centred "
        f"there; {Path(str(model.meta.get('path', 'model'))).name}"
    )
    fig = occlusion_figure(maps, image_to_display(raw), classes, title, captions)
    with atomic_paths([out_png, out_h5]) as (tmp_png, tmp_h5):
        fig.savefig(tmp_png, format="png")
        write_occlusion_h5(
            tmp_h5,
            maps,
            raw,
            indices,
            attrs={
                "data": source.description,
                "model": str(model.meta.get("path", "")),
                "class_names": list(classes),
                "skipped_files": _skipped_json(source),
            },
        )
    return out_png, out_h5, maps


def save_projection(
    out_dir: Path,
    stem: str,
    proj,
    images_uint8: torch.Tensor,
    *,
    image_index: Sequence[int],
    labels: Sequence[int],
    class_names: Sequence[str],
    attrs: Dict,
    image_paths: Optional[Sequence[str]] = None,
    info=None,
) -> List[Path]:
    """Write ``stem.png`` and ``stem.h5`` (raw values and provenance), both atomically.

    ``images_uint8``: the input pixels ``(B, 3, H, W)``; ``proj``: one seed per image;
    ``info``: the layer's info (its receptive field cuts the PNG's patches and
    projections, and ``patch_box`` is stored); None draws whole images.
    """
    png, h5 = Path(out_dir) / f"{stem}.png", Path(out_dir) / f"{stem}.h5"
    names = _captions(image_index, labels, proj.activation, class_names)
    boxes = None if info is None else np.asarray(windows_for(info, proj.position)[0])
    title = _projection_title(proj.layer, int(proj.feature[0]), proj.mode, proj.rule, proj.unpool)
    fig = projection_figure(
        images_uint8.cpu().numpy(), proj.projections.detach().cpu().numpy(), boxes, names, title
    )
    with atomic_paths([png, h5]) as (tmp_png, tmp_h5):
        save_figure(fig, tmp_png)
        write_projection_h5(
            tmp_h5,
            proj,
            images_uint8,
            image_index=image_index,
            labels=labels,
            class_names=class_names,
            attrs=attrs,
            image_paths=image_paths,
            boxes=boxes,
        )
    return [png, h5]


def _projection_title(layer, feature: int, mode: str, rule: str, unpool: str) -> str:
    where = f"layer {layer}" if isinstance(layer, int) or str(layer).isdigit() else f"node {layer}"
    return (
        f"{where}, feature {feature} (mode {mode}, rule {rule}, unpool {unpool}); "
        "\nleft: the image with the receptive field, middle: the patch under it, right: "
        "the projection in it"
    )


def _captions(image_index, labels, activation, class_names) -> List[str]:
    names = []
    for j in range(len(image_index)):
        lab = int(labels[j])
        cls = class_names[lab] if 0 <= lab < len(class_names) else "unlabelled"
        act = float(activation[j])
        fires = f"act {act:.3g}" if act > 0 else "does not fire"
        names.append(f"#{int(image_index[j])} {cls} {fires}")
    return names


def render_projection(data: Dict, png: Path) -> Path:
    """Redraw a projection file's PNG (read with
    :func:`~deconvviz.store.projection.read_projection_h5`) to ``png``, atomically."""
    attrs = data["attrs"]
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in data["class_names"]]
    names = _captions(data["image_index"], data["label"], data["activation"], classes)
    feature = int(data["feature"][0]) if len(data["feature"]) else 0
    layer = attrs["layer"].decode() if isinstance(attrs["layer"], bytes) else attrs["layer"]
    layer = int(layer) if isinstance(layer, (int, np.integer)) else str(layer)
    title = _projection_title(
        layer, feature, str(attrs["mode"]), str(attrs["rule"]), str(attrs["unpool"])
    )
    fig = projection_figure(data["image"], data["projection"], data.get("patch_box"), names, title)
    with atomic_paths([png]) as (tmp,):
        save_figure(fig, tmp)
    return Path(png)


def run_filters(
    model,
    layer: int,
    out_png: Path,
    *,
    source: Optional[ImageSource] = None,
    limit: Optional[int] = None,
    batch_size: int = 500,
    device: str = "cpu",
    columns: int = 8,
    command_line: str = "",
):
    """Zeiler & Fergus Figure 6: the filters of conv ``layer`` sorted by RMS (largest
    first), RMS under each, and (with ``source``) the features that never fire on it.
    Writes ``out_png`` and the same path with ``.h5`` atomically; returns
    ``([png, h5], LayerFilters, DeadFeatures or None)``."""
    from .engine.filters import dead_features, layer_filters
    from .render.paper import filter_tiles, filters_figure
    from .store.figure import write_figure_files

    out_png = Path(out_png)
    filters = layer_filters(model, layer)
    dead = (
        None
        if source is None
        else dead_features(model, source, layer, limit=limit, batch_size=batch_size, device=device)
    )
    order = filters.order
    flags = None if dead is None else [bool(dead.max_activation[f] <= 0) for f in order]
    clip = ((getattr(model, "meta", None) or {}).get("training") or {}).get("clip_filter_rms")
    kind = "RGB" if filters.weight.shape[1] == 3 else "mean over input channels"
    title = (
        f"Layer {filters.layer} ({filters.path}): {len(order)} filters sorted by RMS "
        f"(under each: feature, RMS)\ntiles: {kind}, each scaled symmetrically around 0 "
        f"(grey = 0)\n{model_caption(model)}"
        + (f"; trained with filter RMS clipped at {clip}" if clip else "")
    )
    if dead is not None:
        never = ", ".join(str(int(f)) for f in dead.dead) or "none"
        title += f"\nnever fire on {short_description(source)} ({dead.num_images} images): {never}"
    fig = filters_figure(
        filter_tiles(filters.weight[order]),
        order.tolist(),
        filters.rms[order].tolist(),
        title,
        dead=flags,
        columns=columns,
        max_rms=clip,
    )
    data = {"weight": filters.weight, "rms": filters.rms, "order": filters.order}
    attrs = {
        "layer": filters.layer,
        "path": filters.path,
        "tiles": kind,
        "model": str((getattr(model, "meta", None) or {}).get("path", "")),
        "model_sha256": str((getattr(model, "meta", None) or {}).get("sha256", "")),
        "command_line": command_line,
        "feature_index_base": 0,
    }
    if dead is not None:
        data.update(max_activation=dead.max_activation, dead=dead.dead)
        attrs.update(
            data=source.description,
            split=source.split or "",
            num_images=dead.num_images,
            skipped_files=_skipped_json(source),
        )
    check_writable_dir(out_png.parent if str(out_png.parent) else Path("."))
    return write_figure_files(fig, out_png, data, attrs), filters, dead


def _skipped_json(source: ImageSource) -> str:
    """The files ``--skip-unreadable`` left out of ``source``, as a JSON list (provenance)."""
    import json

    return json.dumps(list(getattr(source, "skipped", [])))
