"""The ``deconvviz occlusion`` command (occlusion sensitivity, Zeiler & Fergus Figure 7).

This module does not import :mod:`deconvviz.cli` at import time (``cli`` imports
it to register the command), so its few shared options are spelled out here.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import data_option, device_option, model_option, split_option

__all__ = ["occlusion", "run_occlusion"]


def run_occlusion(model, source, indices, out_png: Path, *, layer: int = 2, feature=None,
                  size: int = 8, stride: int = 2, fill="grey", title_extra: str = ""):
    """Occlusion maps of images ``indices`` of ``source``; write ``out_png`` and the same
    path with suffix ``.h5`` atomically. Returns ``(png, h5, maps)``."""
    from .atomic import atomic_paths, check_writable_dir
    from .data import normalize
    from .errors import DeconvvizError
    from .occlusion import occlusion_figure, occlusion_maps, write_occlusion_h5
    from .render import image_to_display

    classes = list(model.meta.get("class_names") or [])
    if source.class_names and classes and list(source.class_names) != classes:
        raise DeconvvizError(f"{source.description} has classes {', '.join(source.class_names)}; "
                             f"the model {', '.join(classes)} (the correct class is ambiguous)")
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(source)]
    if bad:
        raise DeconvvizError(f"image index {bad[0]} is out of range 0..{len(source) - 1} "
                             f"({source.description})")
    out_png = Path(out_png)
    check_writable_dir(out_png.parent if str(out_png.parent) else Path("."))
    out_h5 = out_png.with_suffix(".h5")
    norm = model.meta["normalization"]
    raw = source.read_indices(indices)
    x = normalize(raw, norm["mean"], norm["std"]).to(next(model.parameters()).device)
    labels = source.labels[indices]
    maps = occlusion_maps(model, x, labels, layer=layer, feature=feature, size=size,
                          stride=stride, fill=fill)
    classes = classes or source.class_names
    captions = [f"#{i}" for i in indices]
    fill_desc = maps.fill_name if maps.fill_name in ("grey", "mean") else f"pixel {maps.fill_name}"
    parts = Path(source.description).parts
    where = "/".join(parts[-2:]) if len(parts) > 2 else source.description
    title = (f"Occlusion sensitivity (Zeiler & Fergus Fig. 7): {size}x{size} {fill_desc} square, "
             f"stride {stride}; {where}{title_extra}\nmaps: value with the square centred "
             f"there; {Path(str(model.meta.get('path', 'model'))).name}")
    fig = occlusion_figure(maps, image_to_display(raw), classes, title, captions)
    with atomic_paths([out_png, out_h5]) as (tmp_png, tmp_h5):
        fig.savefig(tmp_png, format="png")
        write_occlusion_h5(tmp_h5, maps, raw, indices,
                           attrs={"data": source.description,
                                  "model": str(model.meta.get("path", "")),
                                  "class_names": list(classes)})
    return out_png, out_h5, maps


@click.command()
@model_option()
@data_option()
@split_option("test")
@click.option("--index", "indices", type=click.IntRange(0), multiple=True,
              help="image to occlude (repeatable; default: 0)")
@click.option("--layer", type=click.IntRange(1), default=2, show_default=True,
              help="layer whose feature's total activation is mapped")
@click.option("--feature", type=click.IntRange(0), default=None,
              help="feature to map (default: each image's strongest feature)")
@click.option("--size", type=click.IntRange(1), default=8, show_default=True,
              help="side of the occluding square in pixels")
@click.option("--stride", type=click.IntRange(1), default=2, show_default=True,
              help="step of the square in pixels")
@click.option("--fill", default="grey", show_default=True,
              help="'grey' (pixel 0.5), 'mean' (the training mean colour) or a pixel value in [0, 1]")
@device_option()
@click.option("--out", type=click.Path(dir_okay=False), default="outputs/occlusion.png",
              show_default=True, help="PNG to write; the maps go to the same name with .h5")
def occlusion(checkpoint, data, split, indices, layer, feature, size, stride, fill, device, out):
    """Occlusion sensitivity: slide a grey square over images and map the strongest
    feature's total activation, the correct class's probability and the most
    probable class (Zeiler & Fergus, Figure 7)."""
    from .checkpoint import load_model
    from .cli import resolve_device
    from .data import resolve_source

    model = load_model(checkpoint, device=resolve_device(device))
    source = resolve_source(data, split=split)
    png, h5, _ = run_occlusion(model, source, list(indices) or [0], Path(out), layer=layer,
                               feature=feature, size=size, stride=stride, fill=fill)
    click.echo(f"wrote {png}")
    click.echo(f"wrote {h5}")
