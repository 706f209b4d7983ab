"""The ``layers`` and ``project`` commands (registered on the ``deconvviz`` group in
:mod:`deconvviz.cli`)."""

from __future__ import annotations

import json

import click

from ..errors import DeconvvizError, NotProjectable
from .common import (
    LAYER,
    command_line,
    data_option,
    device_option,
    model_option,
    projection_options,
    resolve_device,
    source_options,
    split_option,
)

__all__ = ["layers", "project"]


@click.command()
@model_option()
@click.option(
    "--all",
    "all_nodes",
    is_flag=True,
    help="every node of the traced graph, not only the ones worth projecting",
)
def layers(checkpoint, all_nodes):
    """List the layers: number or node name, op, features, output size, receptive field,
    and whether it can be projected (or why not).

    A plain conv stack (the bundled CNN, AlexNet, VGG) lists its numbered conv
    layers; any other network, or --all, lists the nodes of its traced graph,
    named as torchvision's get_graph_node_names names them; --layer takes either.
    A node the deconvnet cannot go back from is listed with the reason: the
    first op on the way back that has no rule yet.
    """
    from ..data.preprocess import Preprocessing
    from ..engine.net.layers import list_layers
    from ..engine.net.network import graph_of

    model = checkpoint.load()
    size = Preprocessing.from_meta(model.meta).size
    graph = graph_of(model, size)
    if graph.layers and not all_nodes:
        rows = [
            (str(i.index), i.path, str(i.features), _size(i.output_size), _field(i), "yes")
            for i in list_layers(model, size, graph)
        ]
        head = ("layer", "module")
        foot = "features count from 0; layers from 1; --all lists every node by name"
    else:
        rows, blocked = [], {}
        for n in graph.listed(all_nodes):
            why = graph.why_not(n.name, short=True)
            if why and graph.blocker(n.name) is not None:
                blocked.setdefault(graph.blocker(n.name).what, []).append(n.name)
            shape = n.shape or ()
            # a receptive field only where the reverse pass reaches the image
            field = _field_of(graph, n.name) if not why and len(shape) == 3 else "-"
            rows.append(
                (
                    n.name,
                    n.what if len(n.what) < 28 else n.op,
                    str(shape[0]) if len(shape) in (1, 3) else "-",
                    _size(shape[1:]) if len(shape) == 3 else "-",
                    field,
                    "no: " + why if why else "yes",
                )
            )
        head = ("node", "op")
        foot = "features count from 0; give --layer a node name" + (
            "" if all_nodes else "; --all lists every node"
        )
        if blocked:
            count = sum(len(v) for v in blocked.values())
            some = "all" if count == len(rows) else f"{count} of the"
            foot += (
                f"\n{some} {len(rows)} nodes listed cannot be projected yet: the "
                f"deconvnet has no rule for {', '.join(sorted(blocked))}"
            )
            if count == len(rows) and not all_nodes:
                can = sum(not graph.why_not(n.name) for n in graph.nodes)
                foot += f"; --all shows the {can} node(s) that can" if can else ""
    heads = head + ("features", "output", "receptive field", "projectable")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    align = "<<>><<"
    for row in [heads] + rows:
        cells = [f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)]
        click.echo("  ".join(cells[:-1]) + "  " + row[-1])
    click.echo(foot)


def _size(hw) -> str:
    return f"{hw[0]}x{hw[1]}"


def _field(info) -> str:
    return f"{_size(info.rf_size)} (stride {info.rf_jump[0]})"


def _field_of(graph, name: str) -> str:
    try:
        return _field(graph.info(name))
    except DeconvvizError:  # a node whose field the geometry cannot follow (a 2-D detour)
        return "-"


@click.command()
@model_option()
@click.option(
    "--layer",
    type=LAYER,
    required=True,
    help="layer number (a conv block, from 1) or node name (see 'deconvviz layers')",
)
@click.option("--feature", type=int, required=True, help="feature (channel) index, from 0")
@data_option()
@split_option("test")
@click.option(
    "--image",
    "image_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="project these image files (repeatable) instead of searching the data",
)
@click.option(
    "--index",
    "indices",
    multiple=True,
    type=click.IntRange(0),
    help="project the images at these indices of --data (repeatable)",
)
@click.option(
    "--top",
    type=click.IntRange(1),
    default=9,
    show_default=True,
    help="without --image/--index: how many of the strongest images to show",
)
@projection_options("max")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="images per forward pass while searching",
)
@device_option()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="outputs",
    show_default=True,
    help="folder for the PNG and HDF5 files",
)
def project(
    checkpoint,
    layer,
    feature,
    data,
    workers,
    skip_unreadable,
    split,
    image_paths,
    indices,
    top,
    mode,
    rule,
    unpool,
    batch_size,
    device,
    out,
):
    """Project one feature of one layer back to pixels (Zeiler & Fergus deconvnet).

    By default the images are the --top images of the data source on which the
    feature fires most. Writes a PNG (each image beside its projection) and an
    HDF5 file with the raw values, and prints both paths.
    """
    from ..data.folders import image_files_source
    from ..data.preprocess import Preprocessing
    from ..data.resolve import resolve_source
    from ..data.source import normalize
    from ..engine.deconv.deconvnet import deconvolve
    from ..engine.net.network import graph_of, resolve_info
    from ..engine.scan import strongest_images
    from ..runs.figures_run import save_projection
    from ..store.atomic import output_folder

    device = resolve_device(device)
    model = checkpoint.load(device)
    size = Preprocessing.from_meta(model.meta).size
    try:
        info = resolve_info(graph_of(model, size), layer)
    except NotProjectable:
        raise  # the layer exists; the network refuses it: one line, exit 1
    except DeconvvizError as exc:
        raise click.BadParameter(str(exc), param_hint="--layer") from None
    what = f"layer {layer}" if isinstance(layer, int) else f"node '{layer}'"
    if not 0 <= feature < info.features:
        raise click.BadParameter(
            f"feature {feature} is out of range: {what} has features "
            f"0..{info.features - 1} (see 'deconvviz layers')",
            param_hint="--feature",
        )
    if image_paths and indices:
        raise click.BadParameter("give --image or --index, not both", param_hint="--image")
    with output_folder(out) as out_dir:  # removed again if the run fails
        mean, std = model.meta["normalization"]["mean"], model.meta["normalization"]["std"]
        paths = None
        if image_paths:
            src = image_files_source(
                list(image_paths), skip_unreadable=skip_unreadable, **source_options(model)
            )
            idx = torch_arange(len(src))
            paths = list(src.paths)  # the readable ones, with --skip-unreadable
            data_desc = ", ".join(image_paths)
        else:
            src = resolve_source(
                data,
                split=split,
                workers=workers,
                skip_unreadable=skip_unreadable,
                **source_options(model),
            )
            data_desc = src.description
            if indices:
                bad = [i for i in indices if i >= len(src)]
                if bad:
                    raise click.BadParameter(
                        f"index {bad[0]} is out of range: {src.description} has "
                        f"images 0..{len(src) - 1}",
                        param_hint="--index",
                    )
                idx = list(indices)
            else:
                _, best = strongest_images(
                    model, src, layer, top, batch_size=batch_size, device=device, mean=mean, std=std
                )
                idx = best[feature].tolist()
            paths = [src.paths[i] for i in idx] if src.paths else None
        pixels = src.read_indices(idx)
        if pixels.shape[-2:] != tuple(info.image_size):
            raise DeconvvizError(
                f"images are {pixels.shape[-2]}x{pixels.shape[-1]}; the network "
                f"takes {info.image_size[0]}x{info.image_size[1]}"
            )
        x = normalize(pixels.to(device), mean, std)
        proj = deconvolve(model, x, layer, feature, mode=mode, rule=rule, unpool=unpool)
        fired = proj.activation > 0
        if not bool(fired.any()):
            raise DeconvvizError(
                f"feature {feature} of {what} does not fire on any of the "
                f"{len(idx)} image(s) (all activations are 0); nothing to project"
            )
        if not bool(fired.all()):
            click.echo(
                f"note: feature {feature} does not fire on {int((~fired).sum())} of "
                f"{len(idx)} image(s); their projections are zero",
                err=True,
            )
        stem = (
            f"layer{layer}" if isinstance(layer, int) else layer
        ) + f"_feature{feature}_{mode}_{rule}_{unpool}"
        labels = src.labels[torch_as_long(idx)].tolist()
        attrs = {
            "checkpoint": model.meta["path"],
            "checkpoint_sha256": model.meta["sha256"],
            "data_source": data_desc,
            "split": str(src.split or ""),
            "command_line": command_line(),
            "mean": mean,
            "std": std,
            "feature_index_base": 0,
            "layer_index_base": 1,
            "skipped_files": json.dumps(list(src.skipped)),
        }
        written = save_projection(
            out_dir,
            stem,
            proj,
            pixels,
            image_index=idx,
            labels=labels,
            class_names=src.class_names or model.meta["class_names"],
            attrs=attrs,
            image_paths=paths,
            info=info,
        )
        for path in written:
            click.echo(f"wrote {path}")


def torch_arange(n):
    return list(range(n))


def torch_as_long(idx):
    import torch

    return torch.as_tensor(list(idx), dtype=torch.long)
