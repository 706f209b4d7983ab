"""Zeiler & Fergus, Figure 4: feature evolution during training. For a fixed, seeded set
of features of each layer, the strongest projection over the training set in
checkpoints saved at several epochs (``deconvviz train --save-epochs 1,2,5,... --out X.pt``
writes ``X-epochN.pt``).

    python experiments/fig07_feature_evolution.py --checkpoints runs/ [--data D] [--out O]

``--checkpoints`` takes checkpoint files and/or folders (every ``*-epochN.pt`` in them,
ordered by N); ``experiments/run_all.py`` trains them first when there are none.
"""

import re
from pathlib import Path

import click
import torch
from _checkout import DATA, OUT

from deconvviz import deconvolve, list_layers, load_model
from deconvviz.cli.experiment_cmd import experiment_command
from deconvviz.engine.net.layers import get_layer
from deconvviz.engine.scan import strongest_images
from deconvviz.errors import DeconvvizError
from deconvviz.render.figure_parts import save_png, short_description, table_figure
from deconvviz.runs.figures_run import load_images, receptive_crops
from deconvviz.store.figure_h5 import write_h5

NAME = "fig07_feature_evolution"

__all__ = ["main", "epoch_checkpoints"]


def epoch_checkpoints(paths):
    """Checkpoint files from files and folders (``*-epochN.pt``), ordered by epoch."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [f for f in p.glob("*-epoch*.pt") if re.search(r"-epoch(\d+)\.pt$", f.name)]
        elif p.is_file():
            found.append(p)
        else:
            raise DeconvvizError(f"checkpoint {p} does not exist")
    if not found:
        raise DeconvvizError(f"no checkpoints (*-epochN.pt) in {', '.join(map(str, paths))}")
    return found


@experiment_command(DATA, OUT, split="train", needs_model=False)
@click.option(
    "--checkpoints",
    multiple=True,
    required=True,
    help="checkpoint files or folders of *-epochN.pt (repeatable)",
)
@click.option(
    "--per-layer",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="features per layer (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the features")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="scan only the first LIMIT images (default: the whole split)",
)
def main(source, out, checkpoints, per_layer, seed, limit):
    """The strongest projection of fixed features at several epochs (paper Figure 4)."""
    models = sorted(
        (load_model(p) for p in epoch_checkpoints(checkpoints)),
        key=lambda m: (int(m.meta.get("epochs") or 0), m.meta["path"]),
    )
    g = torch.Generator().manual_seed(seed)
    chosen = [
        (info.index, int(f))
        for info in list_layers(models[0], source.image_size)
        for f in sorted(torch.randperm(info.features, generator=g)[:per_layer].tolist())
    ]
    rows = [[None] * len(models) for _ in chosen]
    caps = [[""] * len(models) for _ in chosen]
    data = {
        "layer": [c[0] for c in chosen],
        "feature": [c[1] for c in chosen],
        "epoch": [int(m.meta.get("epochs") or 0) for m in models],
    }
    for j, model in enumerate(models):
        scan = strongest_images(model, source, sorted({c[0] for c in chosen}), limit=limit)
        for layer, (values, best) in scan.items():
            values, best = values[:, 0].double(), best[:, 0]
            picks = [(r, f) for r, (lay, f) in enumerate(chosen) if lay == layer]
            idx = [int(best[f]) for _, f in picks]
            _, x, _ = load_images(model, source, idx)
            proj = deconvolve(model, x, layer, [f for _, f in picks], mode="max")
            shown = receptive_crops(
                proj.projections, get_layer(model, layer, source.image_size), proj.position
            )
            for k, (r, f) in enumerate(picks):
                rows[r][j] = shown[k]
                caps[r][j] = f"#{idx[k]}  act {float(values[f]):.2f}"
            data[f"epoch{data['epoch'][j]}/layer{layer}/projections"] = proj.projections
            data[f"epoch{data['epoch'][j]}/layer{layer}/image_index"] = idx
            data[f"epoch{data['epoch'][j]}/layer{layer}/activation"] = values[[f for _, f in picks]]
    scanned = len(source) if limit is None else min(limit, len(source))
    columns = [
        f"epoch {e}\n(acc {float(m.meta.get('test_accuracy') or 0):.2f})"
        for e, m in zip(data["epoch"], models)
    ]
    title = (
        f"Feature evolution during training (Zeiler & Fergus Fig. 4): for each feature, the "
        f"projection of its strongest activation, cut to its receptive field,\n"
        f"over {scanned} images of {short_description(source)}, "
        f"in the checkpoint of each epoch (rule deconvnet, unpool switches); act = that activation"
    )
    png = save_png(
        table_figure(
            rows, caps, [f"layer {lay}\nfeature {f}" for lay, f in chosen], columns, title
        ),
        Path(out) / f"{NAME}.png",
    )
    h5 = write_h5(
        Path(out) / f"{NAME}.h5",
        data,
        {
            "checkpoints": [m.meta["path"] for m in models],
            "seed": seed,
            "scanned": scanned,
            "data": source.description,
        },
    )
    return [png, h5]


if __name__ == "__main__":
    main()
