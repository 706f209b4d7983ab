"""``--model FILE`` and ``--weights FILE`` that are not a checkpoint or a state dict: one line,
exit 1, nothing written, nothing run."""

import os
import pickle

import torch
from click.testing import CliRunner

from deconvviz.cli import main
from deconvviz.models.checkpoint import EXPECTED
from deconvviz.models.weights import STATE_DICT


class _RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _files(tmp_path):
    marker = tmp_path / "PWNED"
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    trunc = tmp_path / "trunc.pt"
    torch.save({"w": torch.ones(4)}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:100])
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=2))
    why = {text: "it is a text file, not one written by torch.save",
           trunc: "it is damaged or truncated (a torch.save zip archive without its end)",
           evil: (f"it is a pickle that imports Python objects ({os.system.__module__}.system); "
                  "deconvviz loads only tensors and plain values and never runs code from a "
                  "file")}
    return why, marker


def test_model_file_that_is_not_a_checkpoint(tmp_path):
    why, marker = _files(tmp_path)
    for path, reason in why.items():
        for args in (["info", "--model", path],
                     ["project", "--model", path, "--layer", "1", "--feature", "0",
                      "--out", tmp_path / "out"]):
            r = CliRunner().invoke(main, [str(a) for a in args])
            assert r.exit_code == 1, r.output
            assert r.output.splitlines() == [f"Error: {path} is not {EXPECTED}: {reason}"]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    why, marker = _files(tmp_path)
    for path, reason in why.items():
        r = CliRunner().invoke(main, ["layers", "--model", "torchvision:resnet18",
                                      "--weights", str(path)])
        assert r.exit_code == 1, r.output
        assert r.output.splitlines() == [f"Error: {path} is not {STATE_DICT}: {reason}"]
    assert not marker.exists()
