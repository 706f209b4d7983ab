"""A small report made in the test (tiny CNN, generated images) for the web report tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import torch

DEAD = 7  # a feature of layer 2 that never fires (its bias is set far below zero)


def tiny_model(folder: Path):
    """A random CifarCNN (hidden 16) saved and loaded like a user's checkpoint."""
    from deconvviz.data.builtin import BUILTIN_CLASSES
    from deconvviz.engine.net.layers import conv_stack
    from deconvviz.models.architectures import build_model
    from deconvviz.models.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("cifar_cnn", num_classes=10, hidden=16)
    path = Path(folder) / "tiny.pt"
    save_checkpoint(
        path,
        model,
        arch="cifar_cnn",
        config={"num_classes": 10, "hidden": 16},
        class_names=BUILTIN_CLASSES,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        epochs=0,
        test_accuracy=0.1,
    )
    model = load_model(path)
    with torch.no_grad():
        conv_stack(model)[3].bias[DEAD] = -1e6
    return model


def source(
    n: int = 40, class_names: Optional[Sequence[str]] = None, paths: Optional[Sequence[str]] = None
):
    from deconvviz.data.builtin import BUILTIN_CLASSES, synthetic_images
    from deconvviz.data.source import ImageSource

    images, labels = synthetic_images(n, seed=3)
    return ImageSource(
        description=f"generated[:{n}]",
        kind="builtin",
        split="test",
        labels=labels,
        class_names=list(class_names or BUILTIN_CLASSES),
        images=images,
        paths=list(paths) if paths else None,
    )


def make_report(folder: Path, k: int = 3, html: bool = False, **kw) -> Path:
    """Write a two-layer report of the tiny model into ``folder``; returns report.h5."""
    from deconvviz.runs.report_run import write_report

    Path(folder).mkdir(parents=True, exist_ok=True)
    model = tiny_model(folder)
    write_report(
        model,
        kw.pop("src", None) or source(),
        folder,
        [1, 2],
        k,
        batch_size=16,
        progress=False,
        png=False,
        html=html,
        command_line="deconvviz report --test",
        **kw,
    )
    return Path(folder) / "report.h5"


def layer_json(page: str):
    """The JSON a layer page carries (as the page's script reads it)."""
    import json

    m = re.search(r'<script type="application/json" id="layer-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))
