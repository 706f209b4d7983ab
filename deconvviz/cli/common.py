"""What every command shares: options (one definition each), one-line error handling,
the command line for provenance, the device choice and output checks."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
from pathlib import Path

import click

from ..engine.variants import MODES, RULES, UNPOOLS
from ..errors import DeconvvizError

__all__ = [
    "command_line",
    "resolve_device",
    "out_file_check",
    "one_line_errors",
    "DATA_HELP",
    "data_option",
    "split_option",
    "model_option",
    "device_option",
    "projection_options",
    "ModelChoice",
    "source_options",
    "LAYER",
]

DATA_HELP = (
    "data source: 'builtin' (generated images, no files needed), an official "
    "cifar-10-batches-py folder, an ImageFolder tree, a folder with train/ and test/ "
    "trees, a folder of images, or one image file"
)


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


def _workers(ctx, param, value):
    from ..data.decode import check_workers

    try:
        return check_workers(value)
    except DeconvvizError as exc:
        raise click.BadParameter(str(exc)) from None


def data_option(default="builtin"):
    """``--data`` and ``--workers`` (processes that decode image files the first time)."""

    def decorate(f):
        f = click.option(
            "--skip-unreadable",
            is_flag=True,
            help="skip image files that cannot be read (one summary line; the "
            "skipped files are recorded in the output's provenance) instead "
            "of stopping at the first",
        )(f)
        f = click.option(
            "--workers",
            type=int,
            default=0,
            show_default=True,
            callback=_workers,
            help="processes decoding image files (the first time; later runs "
            "read the decoded-image cache); 0 decodes in this process",
        )(f)
        return click.option("--data", "data", default=default, show_default=True, help=DATA_HELP)(f)

    return decorate


#: The split every command reads by default where a source has train and test parts.
DEFAULT_SPLIT = "test"


def split_option(default=DEFAULT_SPLIT):
    return click.option(
        "--split",
        type=click.Choice(["train", "test"]),
        default=default,
        show_default=True,
        help="split to use where the source has several",
    )


MODEL_HELP = (
    "the network: a deconvviz checkpoint file, 'torchvision:NAME' (any classification "
    "model of torchvision.models, e.g. torchvision:vgg16_bn), 'timm:NAME' (a timm model, "
    "e.g. timm:efficientnet_b0; pip install 'deconvviz[timm]'), or "
    "'package.module:function' returning an nn.Module  [default: the bundled CIFAR-10 "
    "network]"
)


class ModelChoice:
    """What the model options asked for; :meth:`load` resolves it (one line on error)."""

    def __init__(self, spec=None, weights=None, image_size=None, mean=None, std=None):
        self.spec, self.weights, self.image_size = spec, weights, image_size
        self.mean, self.std = mean, std

    def load(self, device: str = "cpu"):
        from ..models.zoo import resolve_model

        return resolve_model(
            self.spec,
            self.weights,
            device=device,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
        )


def source_options(model) -> dict:
    """``resolve_source`` keywords that preprocess images the way ``model`` expects."""
    from ..data.preprocess import Preprocessing

    return Preprocessing.from_meta(model.meta).source_kwargs()


def _triple(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.replace(",", " ").split()]
    except ValueError:
        parts = []
    if len(parts) != 3:
        raise click.BadParameter(f"expected three numbers (one per channel), got {value!r}")
    return parts


def _size(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("x", " ").replace(",", " ").split()]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"expected a size like 224 or 224x160, got {value!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


class LayerType(click.ParamType):
    """A layer: a number (a block of a plain conv stack, from 1) or a node name as
    torchvision names it (``layer3.1.relu_1``; see ``deconvviz layers --all``)."""

    name = "LAYER"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            number = int(value)
        else:
            text = str(value).strip()
            if not text:
                self.fail("a layer is a number or a node name", param, ctx)
            return text
        if number < 1:
            self.fail(f"layer numbers count from 1; got {number}", param, ctx)
        return number


LAYER = LayerType()


def model_option():
    """``--model``, ``--weights``, ``--image-size``, ``--mean`` and ``--std``; the command
    receives one :class:`ModelChoice` as ``checkpoint``."""

    def decorate(f):
        @functools.wraps(f)
        def wrapper(
            *args, checkpoint=None, weights=None, image_size=None, mean=None, std=None, **kwargs
        ):
            return f(
                *args, checkpoint=ModelChoice(checkpoint, weights, image_size, mean, std), **kwargs
            )

        wrapper = click.option(
            "--std",
            default=None,
            callback=_triple,
            metavar="R,G,B",
            help="input std per channel  [default: the model's]",
        )(wrapper)
        wrapper = click.option(
            "--mean",
            default=None,
            callback=_triple,
            metavar="R,G,B",
            help="input mean per channel  [default: the model's]",
        )(wrapper)
        wrapper = click.option(
            "--image-size",
            default=None,
            callback=_size,
            metavar="SIZE",
            help="input size the images are resized and centre-cropped to "
            "(224 or HxW)  [default: the model's; 224 for ImageNet "
            "models]",
        )(wrapper)
        wrapper = click.option(
            "--weights",
            default=None,
            help="for torchvision:NAME: a torchvision weights name (DEFAULT, "
            "IMAGENET1K_V1, ...) or a local state-dict file; for timm:NAME 'pretrained' or "
            "a state-dict, timm checkpoint or .safetensors file; for "
            "package.module:function a state-dict file  [default: "
            "random initialisation, with a notice]",
        )(wrapper)
        return click.option("--model", "checkpoint", default=None, help=MODEL_HELP)(wrapper)

    return decorate


def device_option():
    return click.option(
        "--device", default="cpu", show_default=True, help="'cpu', 'cuda', 'cuda:N' or 'auto'"
    )


def projection_options(mode_default: str = "max"):
    """``--mode``, ``--rule`` and ``--unpool``: the variants of one projection."""

    def decorate(f):
        f = click.option(
            "--unpool",
            type=click.Choice(UNPOOLS),
            default="switches",
            show_default=True,
            help="unpool with the recorded switches, or copy each value to its "
            "whole pooling window (the switch-free shortcut)",
        )(f)
        f = click.option(
            "--rule",
            type=click.Choice(RULES),
            default="deconvnet",
            show_default=True,
            help="backward ReLU rule: deconvnet (paper), guided backprop, or the plain gradient",
        )(f)
        # "position" seeds need positions, which only the Python API takes
        f = click.option(
            "--mode",
            type=click.Choice([m for m in MODES if m != "position"]),
            default=mode_default,
            show_default=True,
            help="seed the feature's strongest activation (paper) or its whole "
            "map (source material)",
        )(f)
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
    """Make sure ``path`` can be written: its folder is created (as every command that
    writes does), and must be writable; ``path`` must not be a folder."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeconvvizError(
            f"cannot write {path}: cannot create folder {parent} ({exc.strerror or exc})"
        ) from None
    if not os.access(parent, os.W_OK):
        raise DeconvvizError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir():
        raise DeconvvizError(f"cannot write {path}: it is a folder")
