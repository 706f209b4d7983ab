"""Building blocks of the research figures in ``experiments/``.

Each experiment script is a short click command made with
:func:`experiment_command`; the work it shares with the others lives here:
choosing images (seeded), scanning a data source for each feature's strongest
image, randomising a network's weights, labelled tile figures and HDF5 output.
Figures are matplotlib ``Figure`` objects built directly (never pyplot) and
every projection is displayed with :func:`deconvviz.render.to_display`.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click
import numpy as np
import torch
from torch import nn

from .atomic import atomic_path, check_writable_dir
from .data import ImageSource, normalize
from .errors import DeconvvizError
from .layers import conv_stack, get_layer
from .options import one_line_errors

__all__ = ["experiment_command", "find_class_image", "seeded_indices", "load_images",
           "strongest_images", "randomized_copy", "tiles_figure", "table_figure", "write_h5",
           "model_caption", "save_png", "rank_correlation", "all_features_figure",
           "across_images_figure", "class_name", "short_description", "strongest_features",
           "cosine_similarity", "receptive_crops"]


class _ExperimentCommand(click.Command):
    """A click command that turns user errors into one line and exit status 1."""

    def invoke(self, ctx):
        with one_line_errors():
            return super().invoke(ctx)


def experiment_command(default_data: str, default_out: str, split: str,
                       needs_model: bool = True):
    """Decorator: a click command with ``--data``, ``--model``, ``--split`` and ``--out``.

    The function receives ``model`` (loaded with :func:`deconvviz.load_model`;
    the bundled network unless ``--model`` is given), ``source`` (an
    :class:`~deconvviz.data.ImageSource` of ``--data``/``--split``) and ``out``
    (an existing, writable folder), plus its own options. It prints each file it
    returns (a list of paths) and its run time. With ``needs_model=False`` there
    is no ``--model`` option and the function gets no ``model``.
    """
    def wrap(func):
        def run(data, split, out, checkpoint=None, **kwargs):
            from .checkpoint import load_model
            from .data import resolve_source

            started = time.perf_counter()
            out = check_writable_dir(out)
            if needs_model:
                kwargs["model"] = load_model(checkpoint)
            source = resolve_source(data, split=split)
            for path in func(source=source, out=out, **kwargs) or []:
                click.echo(f"wrote {path}")
            click.echo(f"done in {time.perf_counter() - started:.1f}s")

        run.__doc__ = func.__doc__
        run.__name__ = func.__name__
        cmd = click.option("--out", type=click.Path(file_okay=False), default=default_out,
                           show_default=True, help="folder for the PNG and HDF5 files")(run)
        cmd = click.option("--split", type=click.Choice(["train", "test"]), default=split,
                           show_default=True, help="split of --data to use")(cmd)
        if needs_model:
            cmd = click.option("--model", "checkpoint", type=click.Path(dir_okay=False),
                               default=None, help="checkpoint (default: the bundled network)")(cmd)
        cmd = click.option("--data", default=default_data, show_default=True,
                           help="data source (anything 'deconvviz --data' accepts)")(cmd)
        command = click.command(cls=_ExperimentCommand,
                                context_settings={"help_option_names": ["-h", "--help"]})(cmd)
        # The script's own options (click.option on the plain function) come after.
        command.params.extend(reversed(getattr(func, "__click_params__", [])))
        return command
    return wrap


def find_class_image(source: ImageSource, class_name: str, nth: int = 0) -> int:
    """Index of the ``nth`` (from 0) image of class ``class_name`` in ``source``."""
    if class_name not in source.class_names:
        raise DeconvvizError(f"{source.description} has no class {class_name!r} (classes: "
                             f"{', '.join(source.class_names) or 'none, unlabelled'})")
    hits = torch.nonzero(source.labels == source.class_names.index(class_name)).view(-1)
    if nth < 0 or nth >= hits.numel():
        raise DeconvvizError(f"{source.description} has {hits.numel()} images of class "
                             f"{class_name!r}; asked for number {nth} (from 0)")
    return int(hits[nth])


def seeded_indices(n: int, k: int, seed: int) -> List[int]:
    """``min(k, n)`` distinct indices of ``range(n)``, chosen at random with ``seed``, sorted."""
    if n < 1:
        raise DeconvvizError("the data source has no images")
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=g)[:min(k, n)].tolist())


def load_images(model: nn.Module, source: ImageSource, indices: Sequence[int]):
    """``(uint8 (n, 3, H, W), model input (n, 3, H, W), labels (n,))`` of images ``indices``."""
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(source)]
    if bad:
        raise DeconvvizError(f"image index {bad[0]} is out of range 0..{len(source) - 1} "
                             f"({source.description})")
    raw = source.read_indices(indices)
    norm = model.meta["normalization"]
    return raw, normalize(raw, norm["mean"], norm["std"]), source.labels[indices]


def strongest_images(model: nn.Module, source: ImageSource, layer,
                     indices: Optional[Sequence[int]] = None, limit: Optional[int] = None,
                     batch_size: int = 500):
    """For every feature of ``layer``: its largest single activation over the images
    ``indices`` of ``source`` (default: the first ``limit`` images, or all) and the
    source index of the image it occurs in.

    Returns ``(values (F,) float64, image indices (F,) int64)``; ties go to the
    image scanned first. With a list of layers, one pass over the data serves them
    all and the result is a dict ``{layer: (values, indices)}``. This is the
    report's streaming top-k (:func:`deconvviz.report.scan_topk`) with k = 1.
    """
    from .report import scan_topk

    layers = [layer] if isinstance(layer, int) else list(layer)
    scanned = source if indices is None else source.subset(indices)
    stop = len(scanned) if limit is None or indices is not None else min(int(limit), len(scanned))
    if stop == 0:
        raise DeconvvizError(f"{source.description} has no images to scan")
    tops = scan_topk(model, scanned, layers, k=1, batch_size=batch_size, stop=stop)
    back = None if indices is None else torch.as_tensor([int(i) for i in indices])
    result = {}
    for lay, top in tops.items():
        where = top.image_index[:, 0]
        result[lay] = (top.activation[:, 0].double(), where if back is None else back[where])
    return result[layers[0]] if isinstance(layer, int) else result


@torch.no_grad()
def strongest_features(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Each image's feature of ``layer`` with the largest single activation: ``(B,)`` int64
    for model input ``x`` ``(B, 3, H, W)``."""
    info = get_layer(model, layer, tuple(x.shape[-2:]))
    was_training = model.training
    model.eval()
    try:
        out = conv_stack(model)[:info.end](x)
    finally:
        model.train(was_training)
    return out.flatten(2).amax(dim=2).argmax(dim=1)


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks from 1 with ties given their average rank (as in Spearman's coefficient)."""
    uniq, inverse, counts = torch.unique(v, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    return (start.double() + (counts.double() + 1) / 2)[inverse]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (ties averaged) of two projections' per-pixel
    magnitudes, ``|x|`` summed over channels; inputs ``(C, H, W)``. NaN if either
    is constant (e.g. all zero). As in Adebayo et al. (2018)."""
    ra = _average_ranks(a.detach().abs().sum(dim=0).reshape(-1).double())
    rb = _average_ranks(b.detach().abs().sum(dim=0).reshape(-1).double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else float("nan")


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two signed projections (any equal shapes); NaN if one is zero."""
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def all_features_figure(model: nn.Module, raw: torch.Tensor, x: torch.Tensor, layer: int,
                        caption: str, mode: str = "map", rule: str = "deconvnet",
                        unpool: str = "switches", columns: Optional[int] = None):
    """Every feature of ``layer`` projected for one image (source material, figures 1 and 4).

    ``raw``: ``uint8`` ``(1, 3, H, W)``; ``x``: its model input. Returns
    ``(Figure, Projection)``; the first tile is the image, then feature ``k``'s
    projection labelled with ``k`` and its (maximum) activation.
    """
    from .deconvnet import deconvolve
    from .render import image_to_display, to_display

    nfeat = get_layer(model, layer, tuple(x.shape[-2:])).features
    proj = deconvolve(model, x, layer, torch.arange(nfeat), torch.zeros(nfeat, dtype=torch.int64),
                      mode=mode, rule=rule, unpool=unpool)
    tiles = np.concatenate([image_to_display(raw), to_display(proj.projections)])
    labels = [caption] + [f"f{k}  max {float(a):.2f}" for k, a in enumerate(proj.activation)]
    title = (f"Layer {layer}: all {nfeat} features (0-based) projected for {caption}\n"
             f"seed: {_mode_text(mode)}; rule {rule}, unpool {unpool}; {model_caption(model)}")
    if columns is None:
        fits = [c for c in range(8, 14) if len(tiles) % c == 0]
        columns = fits[0] if fits else 8
    return tiles_figure(tiles, labels, title, columns=columns), proj


def across_images_figure(model: nn.Module, source: ImageSource, indices: Sequence[int],
                         layer: int, feature: int, mode: str = "map", rule: str = "deconvnet",
                         unpool: str = "switches", columns: int = 4):
    """One feature projected for many images, each image beside its projection
    (source material, figures 2 and 5). Returns ``(Figure, Projection, uint8 images)``."""
    from .deconvnet import deconvolve
    from .render import image_to_display, pairs_figure, to_display

    raw, x, labels = load_images(model, source, indices)
    proj = deconvolve(model, x, layer, feature, mode=mode, rule=rule, unpool=unpool)
    names = [f"#{i} {class_name(source, int(l))}\nmax {float(a):.2f}"
             for i, l, a in zip(indices, labels, proj.activation)]
    title = (f"Layer {layer}, feature {feature} (0-based) for {len(indices)} images of "
             f"{short_description(source)} (image | projection)\nseed: {_mode_text(mode)}; rule {rule}, "
             f"unpool {unpool}; {model_caption(model)}")
    fig = pairs_figure(image_to_display(raw), to_display(proj.projections), names, title,
                       columns=columns)
    fig.subplots_adjust(top=1 - 0.75 / fig.get_figheight())   # room for the two-line title
    return fig, proj, raw


def _mode_text(mode: str) -> str:
    return {"map": "the whole feature map (as the source material)",
            "max": "the strongest activation only (as Zeiler & Fergus)"}.get(mode, mode)


def short_description(source: ImageSource) -> str:
    """The data source's description cut to its last two path parts (``cifar10/train``)."""
    parts = Path(source.description).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else source.description


def class_name(source: ImageSource, label: int) -> str:
    """Name of class ``label`` in ``source`` (``"?"`` when unlabelled)."""
    return source.class_names[label] if 0 <= label < len(source.class_names) else "?"


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every conv and linear layer re-initialised
    (PyTorch's default initialisation, seeded): the sanity check of Adebayo et
    al. (2018). ``model`` itself is not changed; ``meta`` is copied."""
    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        for m in clone.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    clone.eval()
    return clone


def model_caption(model: nn.Module) -> str:
    """``"cifar_cnn.pt, 30 epochs, test accuracy 0.812"`` from the checkpoint metadata."""
    meta = getattr(model, "meta", None) or {}
    parts = [Path(str(meta.get("path", "model"))).name]
    if meta.get("epochs") is not None:
        parts.append(f"{meta['epochs']} epochs")
    if meta.get("test_accuracy") is not None:
        parts.append(f"test accuracy {float(meta['test_accuracy']):.3f}")
    return ", ".join(parts)


def tiles_figure(tiles: np.ndarray, labels: Sequence[str], title: str, columns: int = 8,
                 tile_inches: float = 1.05):
    """Labelled display tiles ``(N, H, W, 3)`` in a grid of ``columns``.

    Returns a matplotlib ``Figure`` (not attached to pyplot).
    """
    from matplotlib.figure import Figure

    n = len(tiles)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    head = 0.4 + 0.16 * title.count("\n")
    fig = Figure(figsize=(tile_inches * columns, (tile_inches + 0.25) * rows + head), dpi=100)
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(n):
        ax = axes[divmod(i, columns)]
        ax.imshow(tiles[i], interpolation="nearest")
        ax.set_title(labels[i], fontsize=6, pad=2)
    total = (tile_inches + 0.25) * rows + head
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - head / total,
                        wspace=0.08, hspace=0.3)
    return fig


def table_figure(tiles: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[str]],
                 row_names: Sequence[str], column_names: Sequence[str], title: str,
                 tile_inches: float = 1.15, tile_aspect: float = 1.0):
    """A table of display tiles: ``tiles[r][c]`` ``(H, W, 3)`` with caption ``labels[r][c]``,
    rows named on the left, columns named on top; cells are ``tile_inches`` wide and
    ``tile_aspect`` times as high. Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    rows, cols = len(tiles), len(column_names)
    head = 0.7 + 0.17 * title.count("\n")
    left = 1.25
    longest = max(len(line) for line in title.splitlines()) if title else 0
    width = max(left + tile_inches * cols, 0.062 * longest + 0.3)
    height = (tile_inches * tile_aspect + 0.3) * rows + head
    fig = Figure(figsize=(width, height), dpi=100)
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(tiles[r]) and tiles[r][c] is not None:
                ax.imshow(tiles[r][c], interpolation="nearest")
                ax.set_xlabel(labels[r][c], fontsize=6, labelpad=1)
            if r == 0:
                ax.set_title(column_names[c], fontsize=7, pad=3)
        axes[r, 0].set_ylabel(row_names[r], fontsize=6.5, rotation=0, ha="right", va="center",
                              labelpad=4)
    fig.subplots_adjust(left=left / width, right=0.99, bottom=0.3 / height,
                        top=1 - head / height, wspace=0.1, hspace=0.45)
    return fig


def receptive_crops(projections: torch.Tensor, info, positions: torch.Tensor) -> List[np.ndarray]:
    """Raw projections ``(S, 3, H, W)`` cut to the receptive field of each seed's
    activation ``positions`` ``(S, 2)`` in layer ``info`` (a :class:`LayerInfo`), each
    crop then put in display form with :func:`~deconvviz.render.to_display`
    (so its contrast is set by the crop itself). Returns ``S`` arrays ``(h, w, 3)``."""
    from .layers import receptive_box
    from .render import to_display

    crops = []
    for p, pos in zip(projections, positions.tolist()):
        y0, x0, y1, x1 = receptive_box(info, pos, tuple(p.shape[-2:]))
        crops.append(to_display(p[:, y0:y1, x0:x1]))
    return crops


def save_png(fig, path) -> Path:
    """Write a figure to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_h5(path, datasets: Dict[str, object], attrs: Optional[Dict[str, object]] = None) -> Path:
    """Write arrays (tensors, numpy arrays, lists) and attributes to HDF5 atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in datasets.items():
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu().numpy()
                if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
                    value = np.asarray(value, dtype=h5py.string_dtype())
                f.create_dataset(key, data=value)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return Path(path)
