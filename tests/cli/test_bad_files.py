"""``--model FILE`` and ``--weights FILE`` that are not a checkpoint or a state dict: one line,
exit 1, nothing written, nothing run (the files: ``bad_torch_files`` in conftest)."""

from click.testing import CliRunner

from deconvviz.cli import main
from deconvviz.models.checkpoint import EXPECTED
from deconvviz.models.weights import STATE_DICT


def test_model_file_that_is_not_a_checkpoint(bad_torch_files, tmp_path):
    files, marker = bad_torch_files
    for path, reason in files.items():
        for args in (
            ["info", "--model", path],
            [
                "project",
                "--model",
                path,
                "--layer",
                "1",
                "--feature",
                "0",
                "--out",
                tmp_path / "out",
            ],
        ):
            r = CliRunner().invoke(main, [str(a) for a in args])
            assert r.exit_code == 1, r.output
            assert r.output.splitlines() == [f"Error: {path} is not {EXPECTED}: {reason}"]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_weights_file_that_is_not_a_state_dict(bad_torch_files):
    files, marker = bad_torch_files
    for path, reason in files.items():
        r = CliRunner().invoke(
            main, ["layers", "--model", "torchvision:resnet18", "--weights", str(path)]
        )
        assert r.exit_code == 1, r.output
        assert r.output.splitlines() == [f"Error: {path} is not {STATE_DICT}: {reason}"]
    assert not marker.exists()
