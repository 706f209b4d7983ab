"""The unfinished report, ``OUT/report.h5.partial``: where it lives, the writer that
starts or continues it (``--resume``), and what an interrupted run keeps, in words.

:func:`~deconvviz.runs.report_run.write_report` adds each layer to the partial file as
soon as it is projected; Ctrl-C or a crash keeps it (and the saved scan state of
:mod:`.report_scan`) so that a resumed run goes on from the last finished layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ..errors import notice
from ..store.h5 import attr_value, h5py_module
from ..store.report_h5 import REPORT_FILE, ImageTable, finished_layers, layer_names
from ..store.report_write import DamagedPartialError, ReportWriter
from .report_scan import scan_state_path

__all__ = ["partial_path", "ReportInterrupted", "open_partial", "kept_message"]

PARTIAL_SUFFIX = ".partial"


def partial_path(out_dir: Union[str, Path]) -> Path:
    """Where an unfinished report lives, ``OUT/report.h5.partial``: its finished layers,
    kept after Ctrl-C or a crash for ``--resume``; renamed to ``report.h5`` when complete."""
    return Path(out_dir) / (REPORT_FILE + PARTIAL_SUFFIX)


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`~deconvviz.runs.report_run.write_report`; its message says what
    was kept for ``--resume``."""


def open_partial(
    partial: Path, attrs: dict, projection_dtype: str, table: ImageTable, *, resume: bool
) -> ReportWriter:
    """The writer of ``partial``: with ``resume``, the unfinished file of the same run
    continued (one line if it is another run's; a damaged one is started again, with a
    notice); otherwise a new file holding ``table``'s images (an earlier unfinished file
    is replaced, with a notice)."""
    writer = None
    if resume and partial.is_file():
        try:  # (another run's file: one line, kept as it is)
            writer = ReportWriter(partial, attrs, projection_dtype, append=True)
        except DamagedPartialError as exc:
            notice(f"{exc}; projecting every layer again")
    elif partial.exists():
        notice(
            f"starting a new report: the unfinished {partial} is replaced (--resume continues it)"
        )
    if writer is None:
        writer = ReportWriter(partial, attrs, projection_dtype)
        writer.add_images(table)
    return writer


def kept_message(out_dir: Path) -> Optional[str]:
    """What an interrupted :func:`~deconvviz.runs.report_run.write_report` keeps for
    ``--resume``, in words."""
    partial, state = partial_path(out_dir), scan_state_path(out_dir)
    done = total = 0
    if partial.is_file():
        try:
            with h5py_module().File(partial, "r") as f:
                done = len(finished_layers(f))
                total = len(layer_names({k: attr_value(v) for k, v in f.attrs.items()}))
        except (OSError, KeyError):
            done = 0
    if done:
        return (
            f"interrupted after {done} of {total} layers; the finished layers are kept in "
            f"{partial} (an earlier {REPORT_FILE} is left as it was): run the same command "
            "with --resume to finish the report"
        )
    if state.is_file():
        return (
            f"interrupted; the scan so far is saved in {state}: run the same command with "
            "--resume to continue"
        )
    return None
