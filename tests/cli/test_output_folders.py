"""Every command that writes creates the output folder it is given, also nested ones that do
not exist yet (what a new user meets first, issue 13); a folder that cannot be made is one
line."""

from __future__ import annotations

from click.testing import CliRunner
from conftest import assert_render_redraws, folder_bytes

from deconvviz.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_command_that_writes_creates_its_folder(tiny_checkpoint, tmp_path):
    r = run("filters", "--model", tiny_checkpoint, "--out", tmp_path / "f" / "new" / "f.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f" / "new" / "f.png").is_file() and (tmp_path / "f/new/f.h5").is_file()
    r = run(
        "occlusion",
        "--model",
        tiny_checkpoint,
        "--size",
        "16",
        "--stride",
        "16",
        "--out",
        tmp_path / "o" / "new" / "o.png",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "new" / "o.h5").is_file()
    r = run(
        "project",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--feature",
        "0",
        "--top",
        "2",
        "--out",
        tmp_path / "p" / "new",
    )
    assert r.exit_code == 0, r.output
    h5 = tmp_path / "p" / "new" / "layer1_feature0_max_deconvnet_switches.h5"
    assert_render_redraws(h5, h5.parent, tmp_path / "r" / "new")
    r = run(
        "report",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--limit",
        "20",
        "--top",
        "2",
        "--quiet",
        "--out",
        tmp_path / "rep" / "new",
    )
    assert r.exit_code == 0, r.output
    assert len(folder_bytes(tmp_path / "rep" / "new", ".png")) == 33  # the grid + 32 features
    assert_render_redraws(
        tmp_path / "rep" / "new" / "report.h5", tmp_path / "rep" / "new", tmp_path / "rr" / "new"
    )
    # A folder that cannot be made is one line, as before.
    (tmp_path / "file").write_text("x")
    r = run("occlusion", "--model", tiny_checkpoint, "--out", tmp_path / "file" / "o.png")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith(f"Error: cannot create output folder {tmp_path / 'file'}")
