"""The ``deconvviz`` command line: a group of thin commands over the library."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import DeconvvizError
from .options import (data_option, device_option, model_option,  # noqa: F401
                      one_line_errors, projection_options, split_option)

class _Group(click.Group):
    """Turns library errors into one line and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            with one_line_errors():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was written", err=True)
            ctx.exit(130)


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["deconvviz"] + sys.argv[1:])


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeconvvizError(f"--device {device}: CUDA is not available on this machine")
    return device


def _out_file_check(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DeconvvizError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DeconvvizError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir():
        raise DeconvvizError(f"cannot write {path}: it is a folder")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deconvviz")
def main():
    """deconvviz: see what the features of a convolutional network respond to.

    Projects features of a CIFAR-10 CNN back to pixels with the deconvolutional
    network of Zeiler & Fergus (arXiv 1311.2901). Layers count from 1 (conv
    block 1 and 2); features count from 0 (channel indices).
    """


@main.command()
@data_option()
@click.option("--download", is_flag=True,
              help="download the official CIFAR-10 into --data first if it is not there")
@click.option("--test-data", default=None,
              help="source evaluated after each epoch (default: the test split of --data)")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True,
              help="passes over the training data")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True,
              help="images per training step")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.05, show_default=True,
              help="peak learning rate (linear warm-up for one epoch, then cosine decay)")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
              help="SGD with Nesterov momentum 0.9, or AdamW")
@click.option("--weight-decay", type=click.FloatRange(0), default=5e-4, show_default=True,
              help="weight decay of conv and linear weights")
@click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="label smoothing of the cross-entropy loss")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="random crop (4-pixel padding) and horizontal flip")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of initialisation, shuffling and augmentation")
@device_option()
@click.option("--arch", default="cifar_cnn", show_default=True, help="registered architecture")
@click.option("--save-epochs", default="",
              help="comma-separated epochs at which to also save OUT-epochN.pt (e.g. 1,5,10)")
@click.option("--out", type=click.Path(dir_okay=False), default="outputs/model.pt",
              show_default=True, help="checkpoint to write")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(data, download, test_data, epochs, batch_size, lr, optimizer, weight_decay, label_smoothing,
          augment, seed, device, arch, save_epochs, out, quiet):
    """Train a network on a data source and save a checkpoint."""
    import torch
    from .checkpoint import save_checkpoint
    from .data import resolve_source
    from .models import ARCHITECTURES, build_model, full_config
    from .train import TrainConfig, channel_stats, train_model

    device = resolve_device(device)
    out = Path(out)
    _out_file_check(out)
    if arch not in ARCHITECTURES:
        raise click.BadParameter(f"unknown architecture {arch!r} (known: "
                                 f"{', '.join(sorted(ARCHITECTURES))})", param_hint="--arch")
    try:
        snapshots = sorted({int(v) for v in save_epochs.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated epochs, got {save_epochs!r}",
                                 param_hint="--save-epochs") from None
    if any(e < 1 or e > epochs for e in snapshots):
        raise click.BadParameter(f"epochs must lie in 1..{epochs}, got {save_epochs!r}",
                                 param_hint="--save-epochs")
    train_src = resolve_source(data, split="train", download=download)
    test_src = resolve_source(test_data if test_data else data, split="test")
    if int(train_src.labels.min()) < 0:
        raise DeconvvizError(f"{train_src.description} has no labels (an ImageFolder tree, a "
                             "CIFAR-10 folder or 'builtin' is needed for training)")
    classes = train_src.class_names
    mean, std = channel_stats(train_src)
    torch.manual_seed(seed)
    config = full_config(arch, num_classes=len(classes))
    model = build_model(arch, **config)
    hp = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     weight_decay=weight_decay, label_smoothing=label_smoothing,
                     augment=augment, seed=seed)
    started = time.perf_counter()
    meta_common = dict(
        input_size=[3, *train_src.image_size],
        train_data={"source": train_src.description, "kind": train_src.kind,
                    "split": train_src.split, "num_images": len(train_src),
                    "fingerprint": train_src.fingerprint},
        test_data={"source": test_src.description, "num_images": len(test_src)},
        training=dict(hp), command=command_line(), torch_version=str(torch.__version__))

    def save(path, epoch, history):
        save_checkpoint(path, model, arch=arch, config=config, class_names=classes,
                        mean=mean, std=std, epochs=epoch,
                        test_accuracy=float(history["test_accuracy"][-1]),
                        history={k: list(v) for k, v in history.items()},
                        train_seconds=time.perf_counter() - started, **meta_common)

    def on_epoch_end(epoch, history):
        if epoch in snapshots:
            snap = out.with_name(f"{out.stem}-epoch{epoch}{out.suffix or '.pt'}")
            model.to(memory_format=torch.contiguous_format)
            save(snap, epoch, history)
            click.echo(f"saved {snap}")

    history = train_model(model, train_src, mean, std, hp, test_source=test_src, device=device,
                          progress=not quiet, log=click.echo, on_epoch_end=on_epoch_end)
    save(out, epochs, history)
    click.echo(f"test accuracy: {history['test_accuracy'][-1]:.4f}")
    click.echo(f"training time: {time.perf_counter() - started:.0f}s")
    click.echo(f"wrote {out}")


@main.command()
@model_option()
@data_option()
@split_option("test")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True,
              help="images per forward pass")
@device_option()
def evaluate(checkpoint, data, split, batch_size, device):
    """Accuracy of a network on a data source, overall and per class."""
    from .checkpoint import load_model
    from .data import resolve_source
    from .train import evaluate as run_eval

    device = resolve_device(device)
    model = load_model(checkpoint, device=device)
    src = resolve_source(data, split=split)
    if int(src.labels.min()) < 0:
        raise DeconvvizError(f"{src.description} has no labels; evaluation needs a labelled source")
    classes = model.meta["class_names"]
    if src.class_names and list(src.class_names) != list(classes):
        raise DeconvvizError(f"{src.description} has classes {src.class_names}, the model "
                             f"{classes}")
    norm = model.meta["normalization"]
    res = run_eval(model, src, norm["mean"], norm["std"], batch_size=batch_size, device=device)
    click.echo(f"model: {model.meta['path']}")
    click.echo(f"data: {src.description} ({res['num_images']} images)")
    width = max(len(c) for c in res["per_class"])
    for name, acc in res["per_class"].items():
        click.echo(f"  {name:<{width}}  {acc:.4f}")
    click.echo(f"accuracy: {res['accuracy']:.4f}")


@main.command()
@model_option()
def layers(checkpoint):
    """List the conv layers: number, module path, features, output size, receptive field."""
    from .checkpoint import load_model
    from .layers import list_layers

    model = load_model(checkpoint)
    click.echo(f"{'layer':>5}  {'module':<12} {'features':>8}  {'output':>8}  receptive field")
    for info in list_layers(model):
        out = f"{info.output_size[0]}x{info.output_size[1]}"
        rf = f"{info.rf_size[0]}x{info.rf_size[1]} (stride {info.rf_jump[0]})"
        click.echo(f"{info.index:>5}  {info.path:<12} {info.features:>8}  {out:>8}  {rf}")
    click.echo("features count from 0; layers from 1")


@main.command()
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
def project(checkpoint, layer, feature, data, split, image_paths, indices, top, mode, rule,
            unpool, batch_size, device, out):
    """Project one feature of one layer back to pixels (Zeiler & Fergus deconvnet).

    By default the images are the --top images of the data source on which the
    feature fires most. Writes a PNG (each image beside its projection) and an
    HDF5 file with the raw values, and prints both paths.
    """
    from .atomic import check_writable_dir
    from .checkpoint import load_model
    from .data import image_files_source, normalize, resolve_source
    from .deconvnet import deconvolve
    from .layers import get_layer
    from .projection_io import save_projection, strongest_images

    device = resolve_device(device)
    model = load_model(checkpoint, device=device)
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
        src = image_files_source(list(image_paths), info.image_size)
        idx = torch_arange(len(src))
        paths = list(image_paths)
        data_desc = ", ".join(image_paths)
    else:
        src = resolve_source(data, split=split, image_size=info.image_size)
        data_desc = src.description
        if indices:
            bad = [i for i in indices if i >= len(src)]
            if bad:
                raise click.BadParameter(f"index {bad[0]} is out of range: {src.description} has "
                                         f"images 0..{len(src) - 1}", param_hint="--index")
            idx = list(indices)
        else:
            idx, _ = strongest_images(model, src, layer, feature, top, mean, std,
                                      batch_size=batch_size, device=device)
            idx = idx.tolist()
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


@main.command()
@model_option()
@click.option("--json", "as_json", is_flag=True, help="print the metadata as JSON")
def info(checkpoint, as_json):
    """Print a checkpoint's metadata (the bundled network by default)."""
    from .checkpoint import read_checkpoint

    meta = read_checkpoint(checkpoint)
    meta.pop("state_dict")
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    hist = meta.pop("history", None)
    for key in ("path", "sha256", "arch", "config", "class_names", "normalization", "epochs",
                "test_accuracy", "train_data", "test_data", "training", "train_seconds",
                "package_version", "torch_version", "command"):
        if key in meta:
            click.echo(f"{key}: {meta[key]}")
    if hist:
        accs = ", ".join(f"{a:.4f}" for a in hist.get("test_accuracy", []))
        click.echo(f"test accuracy by epoch: {accs}")


from .occlusion_cli import occlusion  # noqa: E402

main.add_command(occlusion)

from .report_cli import render, report  # noqa: E402

main.add_command(report)
main.add_command(render)


if __name__ == "__main__":  # pragma: no cover
    main()
