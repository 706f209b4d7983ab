"""Resumable scans (issue 10): a killed scan continues with --resume to the same report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from click.testing import CliRunner

from deconvviz.cli import main

REPO = Path(__file__).resolve().parents[2]

# The scan reads a batch every 50 ms, so the test can kill it half-way for certain.
SLOW_LAUNCHER = """
import sys, time
from deconvviz.data.source import ImageSource
real = ImageSource.read
def slow(self, *args, **kwargs):
    time.sleep(0.05)
    return real(self, *args, **kwargs)
ImageSource.read = slow
from deconvviz.cli import main
main()
"""


def _args(ckpt, out, *extra):
    return [
        "report",
        "--model",
        str(ckpt),
        "--data",
        "builtin",
        "--limit",
        "600",
        "--batch-size",
        "10",
        "--top",
        "3",
        "--save-every",
        "2",
        "--no-png",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _datasets(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        attrs = {k: f.attrs[k] for k in f.attrs if k != "command_line"}
    return out, attrs


def test_a_killed_scan_resumes_to_the_uninterrupted_report(tiny_checkpoint, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launcher = tmp_path / "slow.py"
    launcher.write_text(SLOW_LAUNCHER)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(launcher)] + _args(tiny_checkpoint, out),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    state = out / ".scan-state.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a third of the scan is saved
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        if state.is_file():
            try:
                saved = torch.load(state, weights_only=True)
            except Exception:  # being replaced right now
                continue
            if saved["next"] >= 200:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(state, weights_only=True)
    assert 200 <= saved["next"] < 600
    assert not (out / "report.h5").exists()

    res = CliRunner().invoke(main, _args(tiny_checkpoint, out, "--resume"))
    assert res.exit_code == 0, res.output
    assert f"resuming the scan at image {saved['next']} of 600" in res.output
    assert not state.exists()
    res = CliRunner().invoke(main, _args(tiny_checkpoint, tmp_path / "whole"))
    assert res.exit_code == 0, res.output
    a, a_attrs = _datasets(out / "report.h5")
    b, b_attrs = _datasets(tmp_path / "whole" / "report.h5")
    assert a_attrs.keys() == b_attrs.keys()
    assert all(str(a_attrs[k]) == str(b_attrs[k]) for k in a_attrs)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(
            a[name], b[name], equal_nan=a[name].dtype.kind == "f"
        ), name


def test_resume_refuses_the_state_of_another_run(tiny_checkpoint, tmp_path):
    out = tmp_path / "r"
    runner = CliRunner()
    assert runner.invoke(main, _args(tiny_checkpoint, out)).exit_code == 0
    report = (out / "report.h5").read_bytes()
    # A state saved by a run with k = 3, then a --resume that asks for k = 4.
    from deconvviz.runs.report_scan import scan_state_path

    state = scan_state_path(out)
    from deconvviz.store.report_write import ReportWriter

    real_write = ReportWriter.add_layer_chunks

    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(self.path))

    ReportWriter.add_layer_chunks = fail
    try:
        res = runner.invoke(main, _args(tiny_checkpoint, out))
    finally:
        ReportWriter.add_layer_chunks = real_write
    assert res.exit_code == 1 and state.is_file()
    saved = state.read_bytes()
    args = _args(tiny_checkpoint, out, "--resume")
    args[args.index("--top") + 1] = "4"
    res = runner.invoke(main, args)
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"Error: --resume: the saved scan state {state} is from another run (its top_k differ);"
        " remove it or run without --resume"
    ]
    assert state.read_bytes() == saved and (out / "report.h5").read_bytes() == report
    # A damaged state file: one line too.
    state.write_bytes(b"not a state")
    res = runner.invoke(main, _args(tiny_checkpoint, out, "--resume"))
    assert res.exit_code == 1 and res.output.startswith(
        f"Error: --resume: cannot read the saved scan state {state}"
    )
    assert len(res.output.strip().splitlines()) == 1
    assert (out / "report.h5").read_bytes() == report
