"""resolve_model: checkpoints, torchvision classifiers and the user's own code, each
checked against the same network built independently in the test (random weights,
small inputs, tiny state-dict files written here; no network access)."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from deconvviz import DeconvvizError
from deconvviz.models.checkpoint import load_model
from deconvviz.models.zoo import model_kind, resolve_model, torchvision_models

CATEGORIES = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _seeded(builder, seed, **kwargs):
    torch.manual_seed(seed)
    return builder(**kwargs).eval()


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _same_outputs(a: nn.Module, b: nn.Module, size=64):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_model_kinds():
    assert model_kind(None) == "checkpoint" and model_kind("runs/net.pt") == "checkpoint"
    assert model_kind("torchvision:vgg16_bn") == "torchvision"
    assert model_kind("my_pkg.nets:make") == "module"
    assert (
        "resnet50" in torchvision_models() and "fasterrcnn_resnet50_fpn" not in torchvision_models()
    )


def test_none_is_the_bundled_network_exactly_as_load_model():
    a, b = resolve_model(None), load_model()
    assert type(a) is type(b) and not a.training
    assert a.meta == b.meta
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_path_options(tiny_checkpoint):
    model = resolve_model(str(tiny_checkpoint), mean=[0.1, 0.2, 0.3])
    assert model.meta["normalization"]["mean"] == [0.1, 0.2, 0.3]
    assert (
        model.meta["normalization"]["std"]
        == load_model(tiny_checkpoint).meta["normalization"]["std"]
    )
    with pytest.raises(DeconvvizError, match=r"^a deconvviz checkpoint carries its own weights; "):
        resolve_model(str(tiny_checkpoint), weights="DEFAULT")
    with pytest.raises(
        DeconvvizError,
        match=r"^checkpoint .* takes 32x32 images; it cannot run at "
        r"64x64 ",
    ):
        resolve_model(str(tiny_checkpoint), image_size=64)


def test_torchvision_random_weights(capsys):
    rng = torch.get_rng_state()
    model = resolve_model("torchvision:resnet18", image_size=64)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "deconvviz: torchvision:resnet18 has random weights (seed 0; no --weights "
        "given): its projections show the architecture, not learned features"
    ]
    assert isinstance(model, torchvision.models.ResNet) and not model.training
    assert not any(m.training for m in model.modules())
    # The same weights as torchvision's own builder after torch.manual_seed(0).
    assert _same_outputs(model, _seeded(torchvision.models.resnet18, 0))
    meta = model.meta
    assert meta["arch"] == "torchvision:resnet18" and meta["weights"] is None
    assert meta["input_size"] == [3, 64, 64] and meta["resize_size"] == 73  # 256/224 of 64
    assert meta["normalization"] == IMAGENET and meta["interpolation"] == "bilinear"
    assert meta["class_names"] == CATEGORIES and meta["num_classes"] == 1000
    again = resolve_model("torchvision:resnet18", image_size=64)
    assert again.meta["sha256"] == meta["sha256"]  # deterministic
    default = resolve_model("torchvision:resnet18")
    assert default.meta["input_size"] == [3, 224, 224] and default.meta["resize_size"] == 256


def test_local_weights_file_round_trip(tmp_path):
    ref = _seeded(torchvision.models.resnet18, 1)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    model = resolve_model("torchvision:resnet18", weights=str(path), image_size=64)
    assert _same_outputs(model, ref) and not model.training
    assert model.meta["path"] == str(path) and model.meta["sha256"] == _sha(path)
    assert model.meta["weights"] == str(path) and model.meta["class_names"] == CATEGORIES
    # A fine-tuned head (10 classes), saved from DataParallel inside a wrapper dict.
    tuned = _seeded(torchvision.models.resnet18, 2, num_classes=10)
    wrapped = tmp_path / "tuned.pt"
    torch.save(
        {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tuned.state_dict().items()}},
        wrapped,
    )
    model = resolve_model("torchvision:resnet18", weights=str(wrapped), image_size=64)
    assert _same_outputs(model, tuned)
    assert model.meta["class_names"] == [f"class{i}" for i in range(10)]


def test_weights_file_for_another_architecture(tmp_path):
    other = _seeded(torchvision.models.squeezenet1_1, 0).state_dict()
    path = tmp_path / "squeeze.pt"
    torch.save(other, path)
    own = _seeded(torchvision.models.resnet18, 0).state_dict()
    # (batch norm fills in a missing num_batches_tracked itself, so it is not reported)
    missing = [k for k in own if k not in other and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in other if k not in own]
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet18", weights=str(path), image_size=64)
    assert str(exc.value) == (
        f"weights file {path} does not fit torchvision:resnet18: {len(missing)} missing key(s) "
        f"({', '.join(missing[:3])}, ...); {len(unexpected)} unexpected key(s) "
        f"({', '.join(unexpected[:3])}, ...)"
    )
    # Same keys, one tensor of another shape.
    own["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(own, path)
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet18", weights=str(path), image_size=64)
    assert str(exc.value) == (
        f"weights file {path} does not fit torchvision:resnet18: 1 of another "
        "shape (conv1.weight: file 64x3x3x3, model 64x3x7x7)"
    )


def test_unreadable_and_non_state_dict_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(
        DeconvvizError,
        match=rf"^{re.escape(str(bad))} is not a state dict "
        r".*: it is a text file",
    ):
        resolve_model("torchvision:resnet18", weights=str(bad))
    torch.save([1, 2, 3], bad)
    with pytest.raises(DeconvvizError, match=r"is not a state dict .*: it holds a list$"):
        resolve_model("torchvision:resnet18", weights=str(bad))
    with pytest.raises(DeconvvizError, match=r"^weights file nowhere/r18\.pt does not exist"):
        resolve_model("torchvision:resnet18", weights="nowhere/r18.pt")


def test_unknown_names_suggest_the_closest():
    n = len(torchvision_models())
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet19")
    assert str(exc.value) == (
        "unknown torchvision model 'resnet19'; closest: resnet18, resnet152, "
        f"resnet101, resnet50, resnet34 (any of the {n} classification "
        "models of torchvision.models)"
    )
    with pytest.raises(
        DeconvvizError,
        match=r"^unknown torchvision model 'vgg16bn'; closest: "
        r"vgg16_bn, ",
    ):
        resolve_model("torchvision:vgg16bn")
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet18", weights="IMAGENET1K_V2")
    assert str(exc.value) == (
        "torchvision:resnet18 has no weights 'IMAGENET1K_V2'; its torchvision "
        "weights are IMAGENET1K_V1, DEFAULT (or give a local state-dict file)"
    )


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_offline_download_names_url_and_cache_path(torch_home, monkeypatch, capsys):
    calls = []

    def offline(url, dst, *a, **k):
        calls.append(url)
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = torch_home / "hub" / "checkpoints" / Path(url).name
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet18", weights="DEFAULT")
    assert str(exc.value) == (
        f"cannot download the weights of torchvision:resnet18 (<urlopen error "
        f"no network>); fetch {url} and save it as {cached}"
    )
    assert calls == [url] and not cached.exists()
    assert capsys.readouterr().out == ""


def test_torchvision_weights_from_the_cache(torch_home, monkeypatch):
    """Once the file sits where torchvision's cache expects it, no download happens."""

    def no_download(*a, **k):
        raise AssertionError("downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = torch_home / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    ref = _seeded(torchvision.models.resnet18, 3)
    torch.save(ref.state_dict(), cached)
    model = resolve_model("torchvision:resnet18", weights="default")
    assert _same_outputs(model, ref, size=224)
    t = weights.transforms()
    assert model.meta["weights"] == "IMAGENET1K_V1" and model.meta["path"] == str(cached)
    assert model.meta["sha256"] == _sha(cached) and model.meta["class_names"] == CATEGORIES
    assert model.meta["input_size"] == [3] + t.crop_size * 2
    assert model.meta["resize_size"] == t.resize_size[0]
    assert model.meta["normalization"] == {"mean": t.mean, "std": t.std}
    small = resolve_model(
        "torchvision:resnet18", weights="IMAGENET1K_V1", image_size=64, std=[0.5, 0.5, 0.5]
    )
    assert small.meta["input_size"] == [3, 64, 64] and small.meta["resize_size"] == 73
    assert small.meta["normalization"] == {"mean": t.mean, "std": [0.5, 0.5, 0.5]}
    cached.write_bytes(b"truncated")
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet18", weights="DEFAULT")
    assert str(exc.value) == (
        f"cannot read torchvision's cached weights {cached} for torchvision:resnet18 (it is a "
        f"text file, not one written by torch.save); delete it, or fetch {weights.url} again "
        "and save it there"
    )


def test_a_malicious_file_in_the_cache_is_named_not_run(torch_home, bad_torch_files):
    """torch's own message would advise loading it unsafely; ours says what it is."""
    files, marker = bad_torch_files
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = torch_home / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    evil = next(p for p in files if p.name == "evil.pt")
    cached.write_bytes(evil.read_bytes())
    with pytest.raises(DeconvvizError) as exc:
        resolve_model("torchvision:resnet18", weights="DEFAULT")
    assert str(exc.value) == (
        f"cannot read torchvision's cached weights {cached} for torchvision:resnet18 "
        f"({files[evil]}); delete it, or fetch {url} again and save it there"
    )
    assert not marker.exists()


def test_googlenet_is_built_like_the_pretrained_one(tmp_path):
    model = resolve_model("torchvision:googlenet", image_size=64)
    assert model.aux1 is None and model.aux2 is None and model.transform_input
    # The file torchvision publishes holds the auxiliary heads; it loads, and they go.
    ref = _seeded(
        torchvision.models.GoogLeNet, 4, aux_logits=True, transform_input=True, init_weights=False
    )
    path = tmp_path / "g.pt"
    torch.save(ref.state_dict(), path)
    loaded = resolve_model("torchvision:googlenet", weights=str(path), image_size=64)
    assert loaded.aux1 is None and _same_outputs(loaded, ref)


NETS = """
    import torch
    from torch import nn

    def make():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(4 * 16 * 16, 5))

    def named():
        net = make()
        net.class_names = ["a", "b", "c", "d", "e"]
        return net

    def fixed():
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))

    def not_a_module():
        return 42

    def boom():
        raise ValueError("bad config")

    CONSTANT = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"zoo_user_nets_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_module(user_module, tmp_path, capsys):
    spec = f"{user_module}:make"
    model = resolve_model(spec, image_size=32)
    assert isinstance(model, nn.Sequential) and not model.training
    assert capsys.readouterr().err == ""  # user code decides its own weights: no notice
    assert model.meta["arch"] == spec and model.meta["class_names"] == [
        f"class{i}" for i in range(5)
    ]
    assert model.meta["input_size"] == [3, 32, 32] and model.meta["resize_size"] == 36
    again = resolve_model(spec, image_size=32)  # user code runs with torch seeded
    assert _same_outputs(model, again, size=32)
    assert resolve_model(f"{user_module}:named", image_size=32).meta["class_names"] == list("abcde")
    # A state-dict file for the user's network.
    torch.manual_seed(9)
    ref = resolve_model(spec, image_size=32)
    for p in ref.parameters():
        p.data.normal_()
    torch.save(ref.state_dict(), tmp_path / "mine.pt")
    loaded = resolve_model(spec, weights=str(tmp_path / "mine.pt"), image_size=32)
    assert _same_outputs(loaded, ref, size=32) and loaded.meta["sha256"] == _sha(
        tmp_path / "mine.pt"
    )


def test_user_module_mistakes(user_module):
    m = user_module
    cases = {
        f"{m}:not_a_module": f"{m}:not_a_module returned a builtins.int, not a torch.nn.Module",
        f"{m}:boom": f"{m}:boom raised ValueError: bad config",
        f"{m}:CONSTANT": f"{m}:CONSTANT is a int, not a function that returns an nn.Module",
        "zoo_no_such_pkg.nets:make": "cannot import zoo_no_such_pkg.nets for --model "
        "zoo_no_such_pkg.nets:make: ModuleNotFoundError: No module "
        "named 'zoo_no_such_pkg'",
    }
    for spec, message in cases.items():
        with pytest.raises(DeconvvizError) as exc:
            resolve_model(spec, image_size=32)
        assert str(exc.value) == message
    with pytest.raises(DeconvvizError, match=rf"^module {m} \(.*\) has no 'nothing'"):
        resolve_model(f"{m}:nothing")
    with pytest.raises(
        DeconvvizError,
        match=r"^weights file DEFAULT does not exist \(for a model of "
        r"your own, --weights takes a state-dict file",
    ):
        resolve_model(f"{m}:make", weights="DEFAULT", image_size=32)
    with pytest.raises(
        DeconvvizError,
        match=rf"^{m}:fixed does not run on 3x32x32 images: "
        r"RuntimeError: mat1 and mat2 shapes cannot be "
        r".*; choose another image size$",
    ):
        resolve_model(f"{m}:fixed", image_size=32)
    assert resolve_model(f"{m}:fixed", image_size=8).meta["num_classes"] == 2


def test_public_load_model_and_load_data_take_every_spec(tmp_path, tiny_checkpoint):
    import numpy as np
    from PIL import Image

    import deconvviz

    assert (
        deconvviz.load_model(str(tiny_checkpoint), "cpu").meta == load_model(tiny_checkpoint).meta
    )
    ref = _seeded(torchvision.models.resnet18, 6)
    torch.save(ref.state_dict(), tmp_path / "r.pt")
    model = deconvviz.load_model(
        "torchvision:resnet18", weights=str(tmp_path / "r.pt"), image_size=64
    )
    assert _same_outputs(model, ref)
    (tmp_path / "imgs").mkdir()
    photo = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "imgs" / "x.png")
    data = deconvviz.load_data(str(tmp_path / "imgs"), model)
    image, label = data[0]
    assert image.shape == (3, 64, 64) and label == -1
    assert data.mean == tuple(IMAGENET["mean"]) and data.std == tuple(IMAGENET["std"])
