"""Deconvnet, guided backprop and gradient side by side for the same seeds, and the
same projections from the network with randomised weights (the sanity check of
Adebayo et al., 2018: pictures that do not change when the weights are randomised
show the image, not the network).

    python experiments/fig10_rules_and_randomised.py [--data D] [--model M] [--out O]
"""

from pathlib import Path

import click
from _checkout import DATA, OUT

from deconvviz import deconvolve, to_display
from deconvviz.cli.experiment import experiment_command
from deconvviz.engine.analysis import randomized_copy, rank_correlation, strongest_features
from deconvviz.figures import load_images, seeded_indices
from deconvviz.render.display import image_to_display
from deconvviz.render.figures import (
    class_name,
    model_caption,
    save_png,
    short_description,
    table_figure,
)
from deconvviz.store.figure import write_h5

NAME = "fig10_rules_and_randomised"
RULES = ("deconvnet", "guided", "gradient")

__all__ = ["main"]


@experiment_command(DATA, OUT, split="test")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="number of test images (chosen at random with --seed)",
)
@click.option("--seed", type=int, default=2, show_default=True, help="seed of the image choice")
@click.option(
    "--layer",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="layer of the projected features",
)
@click.option(
    "--random-seed", type=int, default=0, show_default=True, help="seed of the randomised weights"
)
def main(model, source, out, count, seed, layer, random_seed):
    """Three backward rules, trained vs. randomised weights, for the same seeds."""
    indices = seeded_indices(len(source), count, seed)
    raw, x, labels = load_images(model, source, indices)
    feats = strongest_features(model, x, layer)  # chosen in the trained network
    nets = {"trained": model, "randomised": randomized_copy(model, random_seed)}
    res = {
        (n, r): deconvolve(net, x, layer, feats, rule=r) for n, net in nets.items() for r in RULES
    }
    shown = {k: to_display(v.projections) for k, v in res.items()}
    images = image_to_display(raw)
    rows, caps, data = [], [], {"images": raw, "image_index": indices, "feature": feats}
    for i in range(len(indices)):
        rows.append([images[i]] + [shown[(n, r)][i] for n in nets for r in RULES])
        cap = [class_name(source, int(labels[i]))]
        for n in nets:
            for r in RULES:
                act = float(res[(n, r)].activation[i])
                if n == "trained":
                    cap.append(f"f{int(feats[i])}  act {act:.2f}")
                else:
                    rho = rank_correlation(
                        res[("trained", r)].projections[i], res[(n, r)].projections[i]
                    )
                    cap.append(f"act {act:.2f}  rho {rho:.2f}")
                    data.setdefault(f"rank_correlation/{r}", []).append(rho)
        caps.append(cap)
    for (n, r), v in res.items():
        data[f"{n}/{r}/projections"] = v.projections
        data[f"{n}/{r}/activation"] = v.activation
    columns = ["image"] + [f"{r}\n({n})" for n in nets for r in RULES]
    title = (
        f"Layer {layer}: deconvnet, guided backprop and gradient for each image's strongest "
        f"feature (0-based, chosen in the trained network), strongest activation seeded\n"
        f"left: trained ({model_caption(model)}); right: all weights re-initialised (seed "
        f"{random_seed}); {short_description(source)}\nrho = Spearman rank correlation of "
        f"|projection| with the trained network's (Adebayo et al. 2018): high rho = the "
        f"method shows the image, not the network"
    )
    png = save_png(
        table_figure(rows, caps, [f"#{i}" for i in indices], columns, title),
        Path(out) / f"{NAME}.png",
    )
    h5 = write_h5(
        Path(out) / f"{NAME}.h5",
        data,
        {"layer": layer, "seed": seed, "random_seed": random_seed, "data": source.description},
    )
    return [png, h5]


if __name__ == "__main__":
    main()
