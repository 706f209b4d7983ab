"""Experiment scripts' command factory: ``--data``, ``--model``, ``--split``, ``--out``."""

from __future__ import annotations

import time

import click

from ..store.atomic import output_folder
from .common import data_option, model_option, one_line_errors, source_options

__all__ = ["experiment_command"]


class _ExperimentCommand(click.Command):
    """A click command that turns user errors into one line and exit status 1."""

    def invoke(self, ctx):
        with one_line_errors():
            return super().invoke(ctx)


def experiment_command(default_data: str, default_out: str, split: str, needs_model: bool = True):
    """Decorator: a click command with ``--data``, ``--model``, ``--split`` and ``--out``.

    The function receives ``model`` (loaded with :func:`deconvviz.load_model`;
    the bundled network unless ``--model`` is given), ``source`` (an
    :class:`~deconvviz.data.ImageSource` of ``--data``/``--split``) and ``out``
    (an existing, writable folder; created for the run and removed again, if still
    empty, when the run fails), plus its own options. It prints each file it
    returns (a list of paths) and its run time. With ``needs_model=False`` there
    is no ``--model`` option and the function gets no ``model``.
    """

    def wrap(func):
        def run(data, workers, skip_unreadable, split, out, checkpoint=None, **kwargs):
            from ..data.resolve import resolve_source

            started = time.perf_counter()
            with output_folder(out) as out:  # removed again if the run fails
                if needs_model:
                    kwargs["model"] = model = checkpoint.load()
                    source = resolve_source(
                        data,
                        split=split,
                        workers=workers,
                        skip_unreadable=skip_unreadable,
                        **source_options(model),
                    )
                else:
                    source = resolve_source(
                        data, split=split, workers=workers, skip_unreadable=skip_unreadable
                    )
                paths = func(source=source, out=out, **kwargs) or []
            for path in paths:
                click.echo(f"wrote {path}")
            click.echo(f"done in {time.perf_counter() - started:.1f}s")

        run.__doc__ = func.__doc__
        run.__name__ = func.__name__
        cmd = click.option(
            "--out",
            type=click.Path(file_okay=False),
            default=default_out,
            show_default=True,
            help="folder for the PNG and HDF5 files",
        )(run)
        cmd = click.option(
            "--split",
            type=click.Choice(["train", "test"]),
            default=split,
            show_default=True,
            help="split of --data to use",
        )(cmd)
        if needs_model:
            cmd = model_option()(cmd)
        cmd = data_option(default_data)(cmd)
        command = click.command(
            cls=_ExperimentCommand, context_settings={"help_option_names": ["-h", "--help"]}
        )(cmd)
        # The script's own options (click.option on the plain function) come after.
        command.params.extend(reversed(getattr(func, "__click_params__", [])))
        return command

    return wrap
