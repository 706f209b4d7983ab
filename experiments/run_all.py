"""Regenerate every research figure into one folder, one script after the other.

    python experiments/run_all.py [--data D] [--model M] [--out O] [--checkpoints C ...]

Runs each ``experiments/figNN_*.py`` in this process and prints how long each took.
Figures 7 and 14 need checkpoints saved at several epochs: ``--checkpoints`` (files or
folders of ``*-epochN.pt``; default: those in ``--train-dir``, ``outputs/checkpoints``);
when there are none, they are trained first with
``deconvviz train --epochs E --save-epochs 1,2,5,...`` into it.
"""

import importlib
import re
import time
from pathlib import Path

import click
from _checkout import DATA, HERE, OUT, REPO

CHECKPOINTS = str(REPO / "outputs" / "checkpoints")

__all__ = ["main", "scripts"]


def scripts():
    """The figure scripts' module names, in order (``fig01_...`` to ``fig13_...``)."""
    return sorted(p.stem for p in HERE.glob("fig[0-9][0-9]_*.py"))


def _has_epoch_checkpoints(paths):
    for p in map(Path, paths):
        if p.is_file() or (
            p.is_dir() and any(re.search(r"-epoch\d+\.pt$", f.name) for f in p.glob("*-epoch*.pt"))
        ):
            return True
    return False


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default=DATA, show_default=True, help="data source for every figure")
@click.option(
    "--model",
    "checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="checkpoint (default: the bundled network)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=OUT,
    show_default=True,
    help="folder for all figures",
)
@click.option(
    "--checkpoints",
    multiple=True,
    help="epoch checkpoints for figure 7 (files or folders of *-epochN.pt; default: "
    "those in --train-dir)",
)
@click.option(
    "--train-dir",
    type=click.Path(file_okay=False),
    default=CHECKPOINTS,
    show_default=True,
    help="where figure 7's checkpoints are trained when needed",
)
@click.option(
    "--train-epochs",
    type=click.IntRange(1),
    default=30,
    show_default=True,
    help="epochs when figure 7's checkpoints must be trained first",
)
@click.option(
    "--save-epochs",
    default="1,2,5,10,20,30",
    show_default=True,
    help="epochs saved for figure 7 when training",
)
@click.option(
    "--only", default="", help="comma-separated figure numbers or names to run (default: all)"
)
def main(data, checkpoint, out, checkpoints, train_dir, train_epochs, save_epochs, only):
    """Regenerate every figure of experiments/ and print each one's time."""
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    names = [
        n
        for n in scripts()
        if not wanted
        or any(
            n.startswith(w) or n.startswith(f"fig{int(w):02d}_") if w.isdigit() else n.startswith(w)
            for w in wanted
        )
    ]
    if not names:
        raise click.ClickException(f"no figure script matches --only {only!r}")
    timings, failed = [], []
    for name in names:
        args = ["--data", data, "--out", out]
        started = time.perf_counter()
        if name.startswith(("fig07_", "fig14_")):  # both follow features through training
            ck = list(checkpoints) or [train_dir]
            if not _has_epoch_checkpoints(ck):
                if checkpoints:
                    raise click.ClickException(f"no checkpoints in {', '.join(checkpoints)}")
                _train(data, Path(train_dir), train_epochs, save_epochs, timings)
                started = time.perf_counter()
            for c in ck:
                args += ["--checkpoints", c]
        elif checkpoint:
            args += ["--model", checkpoint]
        click.echo(f"== {name}")
        try:
            importlib.import_module(name).main.main(args, standalone_mode=False)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            failed.append(name)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                failed.append(name)
        timings.append((name, time.perf_counter() - started))
    click.echo("\ntimings:")
    for name, seconds in timings:
        click.echo(f"  {name:<34} {seconds:7.1f}s")
    click.echo(f"  {'total':<34} {sum(s for _, s in timings):7.1f}s")
    if failed:
        raise click.ClickException(f"failed: {', '.join(failed)}")


def _train(data, folder, epochs, save_epochs, timings):
    """Train figure 7's checkpoints with ``deconvviz train --save-epochs``."""
    from deconvviz.cli import main as cli

    folder.mkdir(parents=True, exist_ok=True)
    keep = ",".join(e for e in save_epochs.split(",") if e.strip() and int(e) <= epochs)
    click.echo(f"== training {epochs} epochs for figure 7 (saving epochs {keep}) into {folder}")
    started = time.perf_counter()
    try:
        cli.main(
            [
                "train",
                "--data",
                data,
                "--epochs",
                str(epochs),
                "--save-epochs",
                keep,
                "--out",
                str(folder / "evolution.pt"),
                "--quiet",
            ],
            standalone_mode=False,
        )
    except click.ClickException as exc:
        raise click.ClickException(f"training for figure 7 failed: {exc.format_message()}") from exc
    timings.append(("train (deconvviz train)", time.perf_counter() - started))


if __name__ == "__main__":
    main()
