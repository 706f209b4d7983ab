"""``timm:NAME``: networks, weights files, pretrained weights (offline) and preprocessing,
each checked against timm doing the same thing itself (seeded random weights, small
files written here; no network access)."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

timm = pytest.importorskip("timm")
pytest.importorskip("timm.data")  # imports the submodule: timm.data.* below
from conftest import assert_close  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from deconvviz import DeconvvizError, load_model  # noqa: E402
from deconvviz.cli import main  # noqa: E402
from deconvviz.data.preprocess import Preprocessing, preprocess_image  # noqa: E402
from deconvviz.engine.net.trace import trace  # noqa: E402
from deconvviz.models.zoo import model_kind, resolve_model  # noqa: E402

SMALL = "resnet10t"  # timm's smallest ResNet; its data config is 176 px, crop 0.875, bicubic


def _timm_model(name, seed, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).eval()


def _outputs(model, size=64):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(x)


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_timm_kind_and_random_weights_are_timms_own_seeded_model(capsys):
    assert model_kind("timm:resnet50") == "timm"
    model = resolve_model(f"timm:{SMALL}")
    assert type(model) is type(_timm_model(SMALL, 0)) and not model.training
    assert_close(_outputs(model), _outputs(_timm_model(SMALL, 0)))
    meta = model.meta
    assert meta["arch"] == f"timm:{SMALL}" and meta["weights"] is None
    assert meta["random_init_seed"] == 0 and meta["timm_version"] == timm.__version__
    assert meta["num_classes"] == 1000 and meta["class_names"][:2] == ["tench", "goldfish"]
    assert capsys.readouterr().err.strip() == (
        f"deconvviz: timm:{SMALL} has random weights (seed 0; no --weights given): its "
        "projections show the architecture, not learned features"
    )


@pytest.mark.parametrize("name", [SMALL, "tf_mobilenetv3_small_minimal_100"])
def test_preprocessing_gives_timms_own_eval_pixels(name):
    """The crop, resize, interpolation, mean and std of timm's data config: the same
    tensor as timm's eval transform on a non-square photograph-sized image."""
    model = load_model(f"timm:{name}")
    pre = Preprocessing.from_meta(model.meta)
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (300, 250, 3), dtype=np.uint8)
    )
    ours = preprocess_image(image, pre).float() / 255
    ours = (ours - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
    theirs = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))(image)
    assert_close(ours, theirs)


def test_preprocessing_overrides():
    model = load_model(f"timm:{SMALL}", image_size=96, mean=[0.1, 0.2, 0.3])
    assert model.meta["input_size"] == [3, 96, 96]
    assert model.meta["resize_size"] == 96 * 201 // 176  # timm's 201-for-176, in proportion
    assert model.meta["interpolation"] == "bicubic"
    assert model.meta["normalization"] == {"mean": [0.1, 0.2, 0.3], "std": [0.229, 0.224, 0.225]}
    tagged = load_model("timm:resnet18.tv_in1k")  # the tag chooses the data config
    assert tagged.meta["resize_size"] == 256 and tagged.meta["interpolation"] == "bilinear"
    assert load_model("timm:resnet18").meta["resize_size"] == 235  # a1_in1k: crop 0.95


def test_local_weights_files(tmp_path):
    """A state dict, a timm training checkpoint (with its argparse Namespace) and a
    .safetensors file give timm's model with those weights; another class count is
    rebuilt to fit."""
    ref = _timm_model(SMALL, 3)
    plain, ckpt, safe = (
        tmp_path / "w.pth",
        tmp_path / "checkpoint-3.pth.tar",
        tmp_path / "m.safetensors",
    )
    torch.save(ref.state_dict(), plain)
    torch.save(
        {
            "epoch": 3,
            "arch": SMALL,
            "state_dict": ref.state_dict(),
            "version": 2,
            "optimizer": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(model=SMALL, lr=0.1, epochs=[3]),
        },
        ckpt,
    )
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(safe))
    for path in (plain, ckpt, safe):
        model = resolve_model(f"timm:{SMALL}", weights=str(path))
        assert_close(_outputs(model), _outputs(ref), msg=path.name)
        assert model.meta["weights"] == str(path) and model.meta["sha256"] == _sha(path)
    ten = _timm_model(SMALL, 4, num_classes=10)
    torch.save(ten.state_dict(), plain)
    model = resolve_model(f"timm:{SMALL}", weights=str(plain))
    assert_close(_outputs(model), _outputs(ten))
    assert model.meta["class_names"] == [f"class{i}" for i in range(10)]


def test_unsafe_file_is_refused_not_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _timm_model(SMALL, 0).state_dict(), "extra": Path("x")}, path)
    with pytest.raises(
        DeconvvizError,
        match=rf"^{re.escape(str(path))} is not a state dict .*: "
        r"it is a pickle that imports Python objects "
        r"\(pathlib\.PosixPath\); deconvviz loads only "
        r"tensors and plain values and never runs code ",
    ):
        resolve_model(f"timm:{SMALL}", weights=str(path))


def test_weights_for_another_architecture_name_the_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_timm_model("resnet18", 0).state_dict(), path)
    with pytest.raises(DeconvvizError) as exc:
        resolve_model(f"timm:{SMALL}", weights=str(path))
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"weights file {path} does not fit timm:{SMALL}: ")
    assert "missing key(s) (conv1.0.weight, conv1.1.weight, conv1.1.bias, ...)" in text
    assert (
        "64 unexpected key(s) (conv1.weight, layer1.1.conv1.weight, layer1.1.bn1.weight, "
        "...)" in text
    )
    assert "3 of another shape (layer2.0.downsample.1.weight: file 128, model 128x64x1x1, " in text


def test_unknown_names_and_tags():
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("timm:resnet5O")
    assert str(exc.value) == (
        "unknown timm model 'resnet5O'; closest: resnet50, resnet51q, "
        f"resnet50t, resnet50s, resnet50d (any of the "
        f"{len(timm.list_models())} architectures of timm.list_models())"
    )
    with pytest.raises(
        DeconvvizError,
        match=r"^timm model resnet18 has no pretrained tag 'zzz'; "
        r"its tags: a1_in1k, a2_in1k, a3_in1k, .*tv_in1k$",
    ):
        resolve_model("timm:resnet18.zzz")
    with pytest.raises(
        DeconvvizError,
        match=r"^weights file nofile.pt does not exist \(for "
        r"timm:resnet18, --weights takes ",
    ):
        resolve_model("timm:resnet18", weights="nofile.pt")


def test_pretrained_offline_names_url_and_path(torch_home, offline, capsys):
    where = torch_home / "hub" / "checkpoints" / "timm" / f"{SMALL}.c3_in1k.safetensors"
    url = f"https://huggingface.co/timm/{SMALL}.c3_in1k/resolve/main/model.safetensors"
    with pytest.raises(DeconvvizError) as exc:
        resolve_model(f"timm:{SMALL}", weights="pretrained")
    assert str(exc.value) == (
        f"cannot download the weights of timm:{SMALL} (huggingface.co "
        f"cannot be reached); fetch {url} and save it as {where} (or pass "
        "the file as --weights)"
    )
    assert not where.exists() and capsys.readouterr().out == ""


def test_pretrained_from_the_file_saved_where_the_message_says(torch_home, offline):
    ref = _timm_model(SMALL, 7)
    where = torch_home / "hub" / "checkpoints" / "timm" / f"{SMALL}.c3_in1k.safetensors"
    where.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(where))
    model = resolve_model(f"timm:{SMALL}", weights="PRETRAINED")
    assert_close(_outputs(model), _outputs(ref))
    assert model.meta["weights"] == "pretrained" and model.meta["path"] == str(where)
    assert model.meta["sha256"] == _sha(where)
    where.write_bytes(b"truncated")
    with pytest.raises(
        DeconvvizError,
        match=rf"^cannot read timm's weights {re.escape(str(where))}"
        rf" for timm:{SMALL} \(.*\); delete it, or fetch ",
    ):
        resolve_model(f"timm:{SMALL}", weights="pretrained")


def test_pretrained_from_the_hugging_face_cache(tmp_path, torch_home, offline, monkeypatch):
    """A download of an earlier run (huggingface_hub's cache layout) is used offline."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = tmp_path / "hf" / f"models--timm--{SMALL}.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    ref = _timm_model(SMALL, 8)
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors")
    )
    model = resolve_model(f"timm:{SMALL}", weights="pretrained")
    assert_close(_outputs(model), _outputs(ref))
    assert model.meta["path"] == str(snap / "model.safetensors")


def test_failed_download_names_the_reason(torch_home, monkeypatch):
    import timm.models._builder as builder

    def unreachable(*a, **k):
        raise OSError("Connection reset by peer\nmore detail")

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setattr(builder, "load_state_dict_from_hf", unreachable)
    with pytest.raises(DeconvvizError) as exc:
        resolve_model(f"timm:{SMALL}", weights="pretrained")
    assert str(exc.value).startswith(
        f"cannot download the weights of timm:{SMALL} (Connection "
        "reset by peer); fetch https://huggingface.co/timm/"
    )


def test_without_timm_one_line_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    want = (
        "timm:NAME models need the timm package, which is not installed: pip install "
        "'deconvviz[timm]' (or pip install timm)"
    )
    with pytest.raises(DeconvvizError) as exc:
        load_model("timm:resnet18")
    assert str(exc.value) == want
    result = CliRunner().invoke(main, ["layers", "--model", "timm:resnet18"])
    assert result.exit_code == 1 and result.output == f"Error: {want}\n"
    model = load_model("torchvision:resnet18", image_size=64)  # the rest works without timm
    assert "layer1.0.relu_1" in trace(model)[1].values()


def test_cli_lists_a_timm_networks_nodes():
    result = CliRunner().invoke(main, ["layers", "--model", f"timm:{SMALL}", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    assert "layer1.0.act1" in result.output and "layer4.0.act2" in result.output
    bad = CliRunner().invoke(main, ["layers", "--model", "timm:resnet5O"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown timm model 'resnet5O'; ")
    assert bad.output.count("\n") == 1


def test_trace_keeps_whole_only_what_torch_fx_cannot_follow():
    """timm's BatchNormAct2d is traced through (its activation is a node of its own, its
    buffers are named); Conv2dSame (padding from the input size) stays one node."""
    graph, names, _ = trace(timm.create_model("efficientnet_b0"))
    by_name = {v: k for k, v in names.items()}
    assert len(by_name) == len(names)  # every node named, once
    act = by_name["blocks.1.0.bn1.act"]
    assert act.op == "call_module" and act.target == "blocks.1.0.bn1.act"
    assert by_name["bn1.running_mean"].op == "get_attr"
    model = timm.create_model("tf_efficientnet_b0")
    graph, names, _ = trace(model)
    stem = {v: k for k, v in names.items()}["conv_stem"]
    assert stem.op == "call_module"
    assert type(model.get_submodule(stem.target)).__name__ == "Conv2dSame"
    assert not any(n.startswith("conv_stem.") for n in names.values())
