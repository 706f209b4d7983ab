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

DATA_HELP = ("data source: 'builtin' (generated images, no files needed), an official "
             "cifar-10-batches-py folder, an ImageFolder tree, a folder with train/ and test/ "
             "trees, a folder of images, or one image file")


class _Group(click.Group):
    """Turns library errors into one line and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeconvvizError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was written", err=True)
            ctx.exit(130)
        except MemoryError:
            raise click.ClickException("out of memory; try a smaller --batch-size") from None
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None


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


def data_option(default="builtin"):
    return click.option("--data", "data", default=default, show_default=True, help=DATA_HELP)


def split_option(default):
    return click.option("--split", type=click.Choice(["train", "test"]), default=default,
                        show_default=True, help="split to use where the source has several")


def model_option():
    return click.option("--model", "checkpoint", type=click.Path(dir_okay=False), default=None,
                        help="checkpoint file (default: the bundled CIFAR-10 network)")


def device_option():
    return click.option("--device", default="cpu", show_default=True,
                        help="'cpu', 'cuda', 'cuda:N' or 'auto'")


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
def train(data, test_data, epochs, batch_size, lr, optimizer, weight_decay, label_smoothing,
          augment, seed, device, arch, save_epochs, out, quiet):
    """Train a network on a data source and save a checkpoint."""
    import torch
    from .checkpoint import save_checkpoint
    from .data import resolve_source
    from .models import ARCHITECTURES, build_model
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
    train_src = resolve_source(data, split="train")
    test_src = resolve_source(test_data if test_data else data, split="test")
    if int(train_src.labels.min()) < 0:
        raise DeconvvizError(f"{train_src.description} has no labels (an ImageFolder tree, a "
                             "CIFAR-10 folder or 'builtin' is needed for training)")
    classes = train_src.class_names
    mean, std = channel_stats(train_src)
    torch.manual_seed(seed)
    config = {"num_classes": len(classes)}
    model = build_model(arch, **config)
    hp = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     weight_decay=weight_decay, label_smoothing=label_smoothing,
                     augment=augment, seed=seed)
    started = time.perf_counter()
    meta_common = dict(
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


if __name__ == "__main__":  # pragma: no cover
    main()
