"""The ``deconvviz`` command line: a group of thin commands over the library.

One module per command family, named ``<family>_cmd``, registers its commands here;
commands import the shared helpers of :mod:`deconvviz.cli.common`, never each other.
"""

from __future__ import annotations

import click

from .. import __version__
from .common import one_line_errors

__all__ = ["main"]


class _Group(click.Group):
    """Turns library errors into one line and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            with one_line_errors():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was written", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deconvviz")
def main():
    """deconvviz: see what the features of a convolutional network respond to.

    Projects the features of a CNN back to pixels with the deconvolutional
    network of Zeiler & Fergus (arXiv 1311.2901). The network is the bundled
    CIFAR-10 one, any classification model of torchvision (--model
    torchvision:resnet50) or your own code (--model package.module:function).

    'report' finds the images each feature responds to most, with their
    projections and patches, in an HDF5 file, PNGs and a web report (--html);
    'project' projects one feature; 'occlusion' and 'filters' draw the paper's
    occlusion maps and filter diagnostics; experiments/run_all.py (in the
    repository) redraws the paper's figures.

    'layers' lists what can be projected: a node name as torchvision names it
    (layer3.1.relu_1) or, for a plain conv stack, a block number from 1.
    Features (channels) count from 0.
    """


# Each family module registers on the group; adding a family is one line here.
from .compare_cmd import compare  # noqa: E402
from .features_cmd import features  # noqa: E402
from .filters_cmd import filters  # noqa: E402
from .model_cmd import evaluate, info, train  # noqa: E402
from .occlusion_cmd import occlusion  # noqa: E402
from .project_cmd import layers, project  # noqa: E402
from .report_cmd import render, report  # noqa: E402

for _command in (
    train,
    evaluate,
    layers,
    project,
    info,
    occlusion,
    report,
    render,
    filters,
    features,
    compare,
):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
