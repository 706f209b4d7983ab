"""The ``train``, ``evaluate`` and ``info`` commands (registered on the ``deconvviz`` group in
:mod:`deconvviz.cli`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import DeconvvizError
from .common import (
    command_line,
    data_option,
    device_option,
    model_option,
    out_file_check,
    resolve_device,
    source_options,
    split_option,
)

__all__ = ["train", "evaluate", "info"]


@click.command()
@data_option()
@click.option(
    "--download",
    is_flag=True,
    help="download the official CIFAR-10 into --data first if it is not there",
)
@click.option(
    "--test-data",
    default=None,
    help="source evaluated after each epoch (default: the test split of --data)",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=30,
    show_default=True,
    help="passes over the training data",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=128,
    show_default=True,
    help="images per training step",
)
@click.option(
    "--lr",
    type=click.FloatRange(0, min_open=True),
    default=0.05,
    show_default=True,
    help="peak learning rate (linear warm-up for one epoch, then cosine decay)",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam"]),
    default="sgd",
    show_default=True,
    help="SGD with Nesterov momentum 0.9, or AdamW",
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(0),
    default=5e-4,
    show_default=True,
    help="weight decay of conv and linear weights",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="label smoothing of the cross-entropy loss",
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="random crop (4-pixel padding) and horizontal flip",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="seed of initialisation, shuffling and augmentation",
)
@click.option(
    "--clip-filter-rms",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="after each step, rescale conv filters whose RMS exceeds this to it (the "
    "paper's feature-scale clipping, 0.1 there)  [default: no clipping]",
)
@device_option()
@click.option("--arch", default="cifar_cnn", show_default=True, help="registered architecture")
@click.option(
    "--save-epochs",
    default="",
    help="comma-separated epochs at which to also save OUT-epochN.pt (e.g. 1,5,10)",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="outputs/model.pt",
    show_default=True,
    help="checkpoint to write",
)
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(
    data,
    workers,
    skip_unreadable,
    download,
    test_data,
    epochs,
    batch_size,
    lr,
    optimizer,
    weight_decay,
    label_smoothing,
    augment,
    seed,
    clip_filter_rms,
    device,
    arch,
    save_epochs,
    out,
    quiet,
):
    """Train a network on a data source and save a checkpoint."""
    import torch

    from ..data.resolve import resolve_source
    from ..models.architectures import ARCHITECTURES, build_model, full_config
    from ..models.checkpoint import save_checkpoint
    from ..models.train import TrainConfig, channel_stats, train_model

    device = resolve_device(device)
    out = Path(out)
    out_file_check(out)
    if arch not in ARCHITECTURES:
        raise click.BadParameter(
            f"unknown architecture {arch!r} (known: {', '.join(sorted(ARCHITECTURES))})",
            param_hint="--arch",
        )
    try:
        snapshots = sorted({int(v) for v in save_epochs.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated epochs, got {save_epochs!r}", param_hint="--save-epochs"
        ) from None
    if any(e < 1 or e > epochs for e in snapshots):
        raise click.BadParameter(
            f"epochs must lie in 1..{epochs}, got {save_epochs!r}", param_hint="--save-epochs"
        )
    train_src = resolve_source(
        data, split="train", download=download, workers=workers, skip_unreadable=skip_unreadable
    )
    test_src = resolve_source(
        test_data if test_data else data,
        split="test",
        workers=workers,
        skip_unreadable=skip_unreadable,
    )
    if int(train_src.labels.min()) < 0:
        raise DeconvvizError(
            f"{train_src.description} has no labels (an ImageFolder tree, a "
            "CIFAR-10 folder or 'builtin' is needed for training)"
        )
    classes = train_src.class_names
    mean, std = channel_stats(train_src)
    torch.manual_seed(seed)
    config = full_config(arch, num_classes=len(classes))
    model = build_model(arch, **config)
    hp = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        augment=augment,
        seed=seed,
        clip_filter_rms=clip_filter_rms,
    )
    started = time.perf_counter()
    meta_common = dict(
        input_size=[3, *train_src.image_size],
        train_data={
            "source": train_src.description,
            "kind": train_src.kind,
            "split": train_src.split,
            "num_images": len(train_src),
            "fingerprint": train_src.fingerprint,
            "skipped_files": list(train_src.skipped),
        },
        test_data={
            "source": test_src.description,
            "num_images": len(test_src),
            "skipped_files": list(test_src.skipped),
        },
        training=dict(hp),
        command=command_line(),
        torch_version=str(torch.__version__),
    )

    def save(path, epoch, history):
        save_checkpoint(
            path,
            model,
            arch=arch,
            config=config,
            class_names=classes,
            mean=mean,
            std=std,
            epochs=epoch,
            test_accuracy=float(history["test_accuracy"][-1]),
            history={k: list(v) for k, v in history.items()},
            train_seconds=time.perf_counter() - started,
            **meta_common,
        )

    def on_epoch_end(epoch, history):
        if epoch in snapshots:
            snap = out.with_name(f"{out.stem}-epoch{epoch}{out.suffix or '.pt'}")
            model.to(memory_format=torch.contiguous_format)
            save(snap, epoch, history)
            click.echo(f"saved {snap}")

    history = train_model(
        model,
        train_src,
        mean,
        std,
        hp,
        test_source=test_src,
        device=device,
        progress=not quiet,
        log=click.echo,
        on_epoch_end=on_epoch_end,
    )
    save(out, epochs, history)
    click.echo(f"test accuracy: {history['test_accuracy'][-1]:.4f}")
    click.echo(f"training time: {time.perf_counter() - started:.0f}s")
    click.echo(f"wrote {out}")


@click.command()
@model_option()
@data_option()
@split_option("test")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="images per forward pass",
)
@device_option()
def evaluate(checkpoint, data, workers, skip_unreadable, split, batch_size, device):
    """Accuracy of a network on a data source, overall and per class."""
    from ..data.cifar import CIFAR10_CLASSES
    from ..data.resolve import resolve_source
    from ..models.train import evaluate as run_eval

    device = resolve_device(device)
    model = checkpoint.load(device)
    src = resolve_source(
        data, split=split, workers=workers, skip_unreadable=skip_unreadable, **source_options(model)
    )
    if int(src.labels.min()) < 0:
        raise DeconvvizError(f"{src.description} has no labels; evaluation needs a labelled source")
    classes = model.meta["class_names"]
    if src.class_names and list(src.class_names) != list(classes):
        trained = (model.meta.get("train_data") or {}).get("source")
        hint = (
            f"the model was trained on {trained}"
            if trained
            else "the model's classes are "
            f"{', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}"
        )
        cifar = list(classes) == list(CIFAR10_CLASSES)
        raise DeconvvizError(
            f"{src.description} has other classes than the model ({hint}); give --data a source "
            "with the model's classes"
            + (
                ", e.g. a CIFAR-10 copy: --data "
                "../shared/datasets/cifar10 or a cifar-10-batches-py "
                "folder"
                if cifar
                else ""
            )
        )
    norm = model.meta["normalization"]
    res = run_eval(model, src, norm["mean"], norm["std"], batch_size=batch_size, device=device)
    click.echo(f"model: {model.meta['path']}")
    click.echo(f"data: {src.description} ({res['num_images']} images)")
    width = max(len(c) for c in res["per_class"])
    for name, acc in res["per_class"].items():
        click.echo(f"  {name:<{width}}  {acc:.4f}")
    click.echo(f"accuracy: {res['accuracy']:.4f}")


@click.command()
@model_option()
@click.option("--json", "as_json", is_flag=True, help="print the metadata as JSON")
def info(checkpoint, as_json):
    """Print a model's metadata (the bundled network by default)."""
    from ..models.checkpoint import read_checkpoint
    from ..models.zoo import model_kind

    if checkpoint.spec is None or model_kind(checkpoint.spec) == "checkpoint":
        meta = read_checkpoint(checkpoint.spec)  # no need to build the network
        meta.pop("state_dict")
    else:
        meta = dict(checkpoint.load().meta)
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    hist = meta.pop("history", None)
    for key in (
        "path",
        "sha256",
        "arch",
        "model",
        "weights",
        "config",
        "class_names",
        "normalization",
        "input_size",
        "resize_size",
        "epochs",
        "test_accuracy",
        "train_data",
        "test_data",
        "training",
        "train_seconds",
        "package_version",
        "torch_version",
        "command",
    ):
        if key in meta:
            click.echo(f"{key}: {meta[key]}")
    if hist:
        accs = ", ".join(f"{a:.4f}" for a in hist.get("test_accuracy", []))
        click.echo(f"test accuracy by epoch: {accs}")
