"""What every command shares: options (one definition each), one-line error handling,
the command line for provenance, the device choice and output checks."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path

import click

from ..errors import DeconvvizError

__all__ = ["command_line", "resolve_device", "out_file_check", "one_line_errors", "DATA_HELP", "data_option", "split_option", "model_option", "device_option",
           "projection_options"]

DATA_HELP = ("data source: 'builtin' (generated images, no files needed), an official "
             "cifar-10-batches-py folder, an ImageFolder tree, a folder with train/ and test/ "
             "trees, a folder of images, or one image file")


@contextlib.contextmanager
def one_line_errors():
    """Turn library and OS errors into one ``Error: ...`` line and exit status 1."""
    try:
        yield
    except DeconvvizError as exc:
        raise click.ClickException(str(exc)) from None
    except MemoryError:
        raise click.ClickException("out of memory; try a smaller --batch-size") from None
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise click.ClickException(f"{exc.strerror or exc}{where}") from None


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


def projection_options(mode_default: str = "max"):
    """``--mode``, ``--rule`` and ``--unpool``: the variants of one projection."""
    def decorate(f):
        f = click.option("--unpool", type=click.Choice(["switches", "nearest"]),
                         default="switches", show_default=True,
                         help="unpool with the recorded switches, or copy each value to its "
                              "whole pooling window (the switch-free shortcut)")(f)
        f = click.option("--rule", type=click.Choice(["deconvnet", "guided", "gradient"]),
                         default="deconvnet", show_default=True,
                         help="backward ReLU rule: deconvnet (paper), guided backprop, or "
                              "the plain gradient")(f)
        f = click.option("--mode", type=click.Choice(["max", "map"]), default=mode_default,
                         show_default=True,
                         help="seed the feature's strongest activation (paper) or its whole "
                              "map (source material)")(f)
        return f
    return decorate


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["deconvviz"] + sys.argv[1:])


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeconvvizError(f"--device {device}: CUDA is not available on this machine")
    return device


def out_file_check(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DeconvvizError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DeconvvizError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir():
        raise DeconvvizError(f"cannot write {path}: it is a folder")

