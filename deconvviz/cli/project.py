"""The ``layers and project`` commands (registered on the ``deconvviz`` group in :mod:`deconvviz.cli`)."""

from __future__ import annotations

import click

from ..errors import DeconvvizError
from .common import (command_line, data_option, device_option, model_option,
                     projection_options, resolve_device, source_options, split_option)

__all__ = ["layers", "project"]


@click.command()
@model_option()
def layers(checkpoint):
    """List the conv layers: number, module path, features, output size, receptive field."""
    from ..engine.layers import list_layers

    model = checkpoint.load()
    click.echo(f"{'layer':>5}  {'module':<12} {'features':>8}  {'output':>8}  receptive field")
    for info in list_layers(model):
        out = f"{info.output_size[0]}x{info.output_size[1]}"
        rf = f"{info.rf_size[0]}x{info.rf_size[1]} (stride {info.rf_jump[0]})"
        click.echo(f"{info.index:>5}  {info.path:<12} {info.features:>8}  {out:>8}  {rf}")
    click.echo("features count from 0; layers from 1")


@click.command()
@model_option()
@click.option("--layer", type=int, required=True, help="conv layer, counting from 1")
@click.option("--feature", type=int, required=True, help="feature (channel) index, from 0")
@data_option()
@split_option("test")
@click.option("--image", "image_paths", multiple=True, type=click.Path(dir_okay=False),
              help="project these image files (repeatable) instead of searching the data")
@click.option("--index", "indices", multiple=True, type=click.IntRange(0),
              help="project the images at these indices of --data (repeatable)")
@click.option("--top", type=click.IntRange(1), default=9, show_default=True,
              help="without --image/--index: how many of the strongest images to show")
@projection_options("max")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True,
              help="images per forward pass while searching")
@device_option()
@click.option("--out", type=click.Path(file_okay=False), default="outputs", show_default=True,
              help="folder for the PNG and HDF5 files")
def project(checkpoint, layer, feature, data, workers, split, image_paths, indices, top, mode, rule,
            unpool, batch_size, device, out):
    """Project one feature of one layer back to pixels (Zeiler & Fergus deconvnet).

    By default the images are the --top images of the data source on which the
    feature fires most. Writes a PNG (each image beside its projection) and an
    HDF5 file with the raw values, and prints both paths.
    """
    from ..data.sources import image_files_source, normalize, resolve_source
    from ..engine.deconvnet import deconvolve
    from ..engine.layers import get_layer
    from ..engine.topk import strongest_images
    from ..figures import save_projection
    from ..store.atomic import check_writable_dir

    device = resolve_device(device)
    model = checkpoint.load(device)
    try:
        info = get_layer(model, layer)
    except DeconvvizError as exc:
        raise click.BadParameter(str(exc), param_hint="--layer") from None
    if not 0 <= feature < info.features:
        raise click.BadParameter(f"feature {feature} is out of range: layer {layer} has features "
                                 f"0..{info.features - 1} (see 'deconvviz layers')",
                                 param_hint="--feature")
    if image_paths and indices:
        raise click.BadParameter("give --image or --index, not both", param_hint="--image")
    out_dir = check_writable_dir(out)
    mean, std = model.meta["normalization"]["mean"], model.meta["normalization"]["std"]
    paths = None
    if image_paths:
        src = image_files_source(list(image_paths), **source_options(model))
        idx = torch_arange(len(src))
        paths = list(image_paths)
        data_desc = ", ".join(image_paths)
    else:
        src = resolve_source(data, split=split, workers=workers, **source_options(model))
        data_desc = src.description
        if indices:
            bad = [i for i in indices if i >= len(src)]
            if bad:
                raise click.BadParameter(f"index {bad[0]} is out of range: {src.description} has "
                                         f"images 0..{len(src) - 1}", param_hint="--index")
            idx = list(indices)
        else:
            _, best = strongest_images(model, src, layer, top, batch_size=batch_size,
                                       device=device, mean=mean, std=std)
            idx = best[feature].tolist()
        paths = [src.paths[i] for i in idx] if src.paths else None
    pixels = src.read_indices(idx)
    if pixels.shape[-2:] != tuple(info.image_size):
        raise DeconvvizError(f"images are {pixels.shape[-2]}x{pixels.shape[-1]}; the network "
                             f"takes {info.image_size[0]}x{info.image_size[1]}")
    x = normalize(pixels.to(device), mean, std)
    proj = deconvolve(model, x, layer, feature, mode=mode, rule=rule, unpool=unpool)
    fired = proj.activation > 0
    if not bool(fired.any()):
        raise DeconvvizError(f"feature {feature} of layer {layer} does not fire on any of the "
                             f"{len(idx)} image(s) (all activations are 0); nothing to project")
    if not bool(fired.all()):
        click.echo(f"note: feature {feature} does not fire on {int((~fired).sum())} of "
                   f"{len(idx)} image(s); their projections are zero", err=True)
    stem = f"layer{layer}_feature{feature}_{mode}_{rule}_{unpool}"
    labels = src.labels[torch_as_long(idx)].tolist()
    attrs = {"checkpoint": model.meta["path"], "checkpoint_sha256": model.meta["sha256"],
             "data_source": data_desc, "split": str(src.split or ""), "command_line": command_line(),
             "mean": mean, "std": std, "feature_index_base": 0, "layer_index_base": 1}
    written = save_projection(out_dir, stem, proj, pixels, image_index=idx, labels=labels,
                              class_names=src.class_names or model.meta["class_names"],
                              attrs=attrs, image_paths=paths)
    for path in written:
        click.echo(f"wrote {path}")


def torch_arange(n):
    return list(range(n))


def torch_as_long(idx):
    import torch
    return torch.as_tensor(list(idx), dtype=torch.long)

