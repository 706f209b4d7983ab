"""Training and evaluation of the classifier on any data source."""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.source import ImageSource, normalize
from ..progress import Progress
from .constraints import clip_filter_rms

__all__ = ["train_model", "evaluate", "channel_stats", "augment_batch", "TrainConfig"]


class TrainConfig(dict):
    """Hyper-parameters of a training run (a plain dict, stored in the checkpoint)."""

    DEFAULTS = dict(
        epochs=30,
        batch_size=128,
        lr=0.05,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=5e-4,
        label_smoothing=0.1,
        warmup_epochs=1.0,
        augment=True,
        seed=0,
        clip_filter_rms=None,
    )

    def __init__(self, **overrides):
        unknown = set(overrides) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown training options: {sorted(unknown)}")
        super().__init__({**self.DEFAULTS, **overrides})


def channel_stats(source: ImageSource, batch_size: int = 4096):
    """Per-channel mean and std of a source's pixels in ``[0, 1]`` (float64 sums)."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for _, imgs, _ in source.batches(batch_size):
        x = imgs.to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return [float(v) for v in mean], [float(v) for v in std]


def augment_batch(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a ``uint8`` batch."""
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy.view(b, 1) + torch.arange(h).view(1, h)  # (b, h)
    cols = dx.view(b, 1) + torch.arange(w).view(1, w)  # (b, w)
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    bi = torch.arange(b).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: ImageSource,
    mean,
    std,
    batch_size: int = 500,
    device: str = "cpu",
    progress: bool = False,
) -> Dict:
    """Accuracy of ``model`` on a labelled source: overall, per class, and the loss."""
    was_training = model.training
    model.eval()
    n_cls = max(len(source.class_names), int(source.labels.max()) + 1 if len(source) else 0)
    correct = torch.zeros(n_cls, dtype=torch.long)
    seen = torch.zeros(n_cls, dtype=torch.long)
    loss_sum = 0.0
    try:
        with Progress(len(source), "evaluate", enabled=progress) as bar:
            for _, imgs, labels in source.batches(batch_size):
                x = normalize(imgs.to(device), mean, std)
                logits = model(x).float().cpu()
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                pred = logits.argmax(1)
                seen += torch.bincount(labels, minlength=n_cls)
                correct += torch.bincount(labels[pred == labels], minlength=n_cls)
                bar.update(len(labels))
    finally:
        model.train(was_training)
    total = int(seen.sum())
    return {
        "accuracy": float(correct.sum()) / total if total else float("nan"),
        "loss": loss_sum / total if total else float("nan"),
        "per_class": {
            (source.class_names[i] if i < len(source.class_names) else str(i)): (
                float(correct[i]) / float(seen[i]) if seen[i] else float("nan")
            )
            for i in range(n_cls)
        },
        "num_images": total,
    }


def train_model(
    model: nn.Module,
    train_source: ImageSource,
    mean: Sequence[float],
    std: Sequence[float],
    config: TrainConfig,
    *,
    test_source: Optional[ImageSource] = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Optional[Callable[[int, Dict], None]] = None,
) -> Dict:
    """Train ``model`` in place; return the history (loss, accuracy, test accuracy per epoch).

    Deterministic on the CPU for a given ``config["seed"]``: the shuffling and the
    augmentation draw from their own seeded generator, and the weights are
    initialised by the caller under the same seed. With ``config["clip_filter_rms"]
    = R``, every conv filter whose RMS exceeds R is rescaled to R after each step
    (:func:`~deconvviz.models.constraints.clip_filter_rms`).
    """
    gen = torch.Generator().manual_seed(int(config["seed"]) + 1)
    # channels-last convolutions run about 1.3x faster on the CPU here.
    model.to(device=device, memory_format=torch.channels_last)
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_plain = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [
        {"params": params_decay, "weight_decay": config["weight_decay"]},
        {"params": params_plain, "weight_decay": 0.0},
    ]
    if config["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"], nesterov=True)
    elif config["optimizer"] == "adam":
        opt = torch.optim.AdamW(groups, lr=config["lr"])
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config['optimizer']!r}")
    n = len(train_source)
    bs = int(config["batch_size"])
    steps_per_epoch = max(1, math.ceil(n / bs))
    total_steps = steps_per_epoch * int(config["epochs"])
    warmup = int(config["warmup_epochs"] * steps_per_epoch)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return config["lr"] * (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return config["lr"] * 0.5 * (1 + math.cos(math.pi * t))

    images = train_source.all_images()
    labels = train_source.labels
    history = {
        "epoch": [],
        "train_loss": [],
        "train_accuracy": [],
        "test_accuracy": [],
        "seconds": [],
    }
    step = 0
    for epoch in range(1, int(config["epochs"]) + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        with Progress(n, f"epoch {epoch}/{config['epochs']}", enabled=progress) as bar:
            for s in range(0, n, bs):
                idx = order[s : s + bs]
                batch = images[idx]
                if config["augment"]:
                    batch = augment_batch(batch, gen)
                x = normalize(batch.to(device), mean, std).contiguous(
                    memory_format=torch.channels_last
                )
                y = labels[idx].to(device)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config["label_smoothing"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if config["clip_filter_rms"]:  # the paper's feature-scale clipping
                    clip_filter_rms(model, config["clip_filter_rms"])
                step += 1
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
                bar.update(len(idx), loss=loss_sum / seen, acc=correct / seen)
        seconds = time.perf_counter() - t0
        test_acc = float("nan")
        if test_source is not None:
            test_acc = evaluate(model, test_source, mean, std, device=device)["accuracy"]
        history["epoch"].append(epoch)
        history["train_loss"].append(loss_sum / seen)
        history["train_accuracy"].append(correct / seen)
        history["test_accuracy"].append(test_acc)
        history["seconds"].append(seconds)
        log(
            f"epoch {epoch}: loss {loss_sum / seen:.4f}, train accuracy {correct / seen:.4f}, "
            f"test accuracy {test_acc:.4f}, {seconds:.1f}s ({seen / seconds:.0f} img/s)"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history
