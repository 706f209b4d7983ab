"""Files that are not a checkpoint or a state dict: one line in our words, nothing run.

Each bad file is built in the test (``bad_torch_files`` in conftest); the malicious ones
are pickles whose ``__reduce__`` calls ``os.system`` to create a marker file, which must
never appear.
"""

import pytest
import torch

from deconvviz.errors import DeconvvizError
from deconvviz.models.checkpoint import EXPECTED, load_model, read_checkpoint
from deconvviz.models.torchfile import TorchFileError, read_torch_file
from deconvviz.models.weights import STATE_DICT, read_state_file
from deconvviz.models.zoo import resolve_model

#: Words of torch's own message, which advise loading the file unsafely.
TORCH_ADVICE = ("weights_only", "Re-running", "torch.load", "trusted source", "file an issue")


def test_every_bad_file_gets_one_line_naming_it_and_what_was_expected(bad_torch_files):
    files, marker = bad_torch_files
    for path, why in files.items():
        name = path.name
        for expected in (EXPECTED, STATE_DICT):
            with pytest.raises(TorchFileError) as exc:
                read_torch_file(path, expected)
            assert str(exc.value) == f"{path} is not {expected}: {why}", name
            assert (exc.value.path, exc.value.expected, exc.value.why) == (path, expected, why)
            assert not any(w in str(exc.value) for w in TORCH_ADVICE), name
    assert not marker.exists()  # the malicious pickle never ran


def test_checkpoint_and_weights_loaders_use_the_same_words(bad_torch_files, recwarn):
    files, marker = bad_torch_files
    for path, why in files.items():
        with pytest.raises(DeconvvizError) as exc:
            load_model(path)
        assert str(exc.value) == f"{path} is not {EXPECTED}: {why}"
        with pytest.raises(DeconvvizError) as exc:
            resolve_model("torchvision:resnet18", weights=str(path))
        assert str(exc.value) == f"{path} is not {STATE_DICT}: {why}"
    assert not marker.exists()
    # torch's warnings about pickle protocols never reach the user either
    assert not [w for w in recwarn if "torch" in str(w.filename)]


def test_loadable_files_of_the_wrong_kind(tmp_path):
    state = tmp_path / "state.pt"
    torch.save({"conv.weight": torch.zeros(1)}, state)
    with pytest.raises(DeconvvizError) as exc:
        read_checkpoint(state)
    assert str(exc.value) == (
        f"{state} is not {EXPECTED}: it holds a state dict (tensors by parameter name); give it "
        "to --weights with the --model that builds its network (torchvision:NAME or "
        "package.module:function)"
    )
    for obj, held in (
        ([1, 2], "a list"),
        ({}, "an empty dict"),
        ({"epochs": 3}, "a dict whose values are not all tensors"),
    ):
        torch.save(obj, state)
        with pytest.raises(DeconvvizError) as exc:
            read_state_file(state)
        assert str(exc.value) == f"{state} is not {STATE_DICT}: it holds {held}"
    torch.save({"epochs": 3}, state)
    with pytest.raises(DeconvvizError) as exc:
        read_checkpoint(state)
    assert (
        str(exc.value) == f"{state} is not {EXPECTED}: it holds a dict without the "
        "checkpoint's format stamp"
    )
    with pytest.raises(DeconvvizError) as exc:
        read_torch_file(tmp_path, STATE_DICT)
    assert str(exc.value) == f"{tmp_path} is not {STATE_DICT}: it is a folder"
    with pytest.raises(DeconvvizError) as exc:
        read_torch_file(tmp_path / "nowhere.pt", STATE_DICT)
    assert str(exc.value) == f"{tmp_path / 'nowhere.pt'} does not exist (expected {STATE_DICT})"


def test_good_files_load_unchanged(tmp_path):
    path = tmp_path / "good.pt"
    weights = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    torch.save(weights, path)
    got = read_torch_file(path, STATE_DICT)
    assert list(got) == ["w", "b"]
    assert all(torch.equal(got[k], weights[k]) for k in weights)  # the same bytes, read back
