"""Every command on a network of the user's own (issue 9): a small residual net with batch
norm, F.relu, an in-place ReLU and a reused ReLU module, given as package.module:function."""

from __future__ import annotations

import textwrap

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_render_redraws

import deconvviz
from deconvviz.cli import main
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.source import normalize
from deconvviz.store.report_read import read_report_h5

NET = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Res(nn.Module):
        def __init__(self, act=None):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()                      # used twice
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.act = act or nn.ReLU(inplace=True)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            x = self.relu(self.bn(self.stem(x)))
            y = F.relu(self.conv1(x))
            x = self.relu(x + self.conv2(y))
            x = self.act(self.pool(x))
            return self.head(x.mean(dim=(2, 3)))

    def make():
        torch.manual_seed(1)
        m = Res()
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
        return m

    def with_softmax():
        return Res(act=nn.Softmax(dim=1))

    class Modern(nn.Module):
        """SiLU, a squeeze-and-excitation gate, GroupNorm, GELU, a layer scale."""
        def __init__(self):
            super().__init__()
            import torchvision
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.SiLU(inplace=True)
            self.se = torchvision.ops.SqueezeExcitation(8, 4)
            self.norm = nn.GroupNorm(2, 8)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.gelu = nn.GELU()
            self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.5))
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            x = self.se(self.act(self.stem(x)))
            x = x + self.gamma * self.gelu(self.conv(self.norm(x)))
            return self.head(x.mean(dim=(2, 3)))

    def modern():
        torch.manual_seed(1)
        return Modern()

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return self.conv(-x)

    def untraceable():
        return Branchy()
''')


@pytest.fixture
def user_net(user_module):
    user_module("usernet", NET)
    return "usernet:make"


@pytest.fixture
def photos(tmp_path):
    from PIL import Image

    images, _ = synthetic_images(12, seed=2, size=40)  # resized and centre-cropped to 32
    root = tmp_path / "photos"
    for i in range(12):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    return root


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


MODEL = ("--image-size", "32")


def test_layers_lists_the_graph_nodes_by_torchvision_name(user_net):
    res = _run("layers", "--model", user_net, *MODEL)
    assert res.exit_code == 0, res.output
    names = [line.split()[0] for line in res.output.splitlines()[1:-1]]
    assert names == [
        "stem",
        "relu",
        "conv1",
        "relu_1",
        "conv2",
        "add",
        "relu_2",
        "pool",
        "act",
        "head",
    ]
    every = _run("layers", "--model", user_net, *MODEL, "--all")
    assert every.exit_code == 0 and "bn " in every.output and "mean " in every.output


def test_layers_and_the_web_report_name_the_nodes_and_ops_of_a_modern_network(
    user_net, photos, tmp_path
):
    res = _run("layers", "--model", "usernet:modern", *MODEL)
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.output.splitlines()[1:-1]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("stem", "Conv2d", "yes"),
        ("act", "SiLU", "yes"),
        ("se", "SqueezeExcitation", "yes"),
        ("conv", "Conv2d", "yes"),
        ("gelu", "GELU", "yes"),
        ("add", "operator.add", "yes"),
        ("head", "Linear", "yes"),
    ]
    # gate and norm statistics held: the receptive field is the convs' 3x3 + 3x3 (stride 1)
    assert rows[4][4] == "5x5" and rows[2][4] == "3x3"
    out = tmp_path / "r"
    res = _run(
        "report",
        "--model",
        "usernet:modern",
        *MODEL,
        "--data",
        photos,
        "--layer",
        "se",
        "--layer",
        "gelu",
        "--top",
        "2",
        "--out",
        out,
        "--quiet",
        "--no-png",
        "--html",
    )
    assert res.exit_code == 0, res.output
    rep = read_report_h5(out / "report.h5")
    assert [(lr.name, lr.op) for lr in rep.layers.values()] == [
        ("se", "SqueezeExcitation"),
        ("gelu", "GELU"),
    ]
    page = (out / "site" / "gelu.html").read_text()
    assert "node gelu (gelu, GELU): 8 features" in page


def test_project_report_render_and_occlusion_on_a_node(user_net, photos, tmp_path):
    res = _run(
        "project",
        "--model",
        user_net,
        *MODEL,
        "--layer",
        "relu_2",
        "--feature",
        "3",
        "--data",
        photos,
        "--top",
        "4",
        "--out",
        tmp_path / "p",
    )
    assert res.exit_code == 0, res.output
    h5 = tmp_path / "p" / "relu_2_feature3_max_deconvnet_switches.h5"
    with h5py.File(h5) as f:
        stored, images, index = f["projection"][()], f["image"][()], f["image_index"][()]
        assert f.attrs["layer"] == "relu_2"
    model = deconvviz.load_model(user_net, image_size=32, progress=False)
    norm = model.meta["normalization"]
    x = normalize(torch.from_numpy(images), norm["mean"], norm["std"])
    ref = deconvviz.deconvolve(model, x, "relu_2", 3)
    np.testing.assert_allclose(stored, ref.projections.numpy(), rtol=1e-5, atol=1e-6)
    assert len(index) == 4

    out = tmp_path / "r"
    res = _run(
        "report",
        "--model",
        user_net,
        *MODEL,
        "--data",
        photos,
        "--layer",
        "conv1",
        "--layer",
        "add",
        "--layer",
        "act",
        "--top",
        "3",
        "--out",
        out,
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    rep = read_report_h5(out / "report.h5")
    assert list(rep.layers) == ["conv1", "add", "act"]
    assert rep.layers["add"].projection.shape == (8, 3, 3) + rep.layers["add"].rf_size
    assert (out / "add.png").is_file() and len(list((out / "act").glob("*.png"))) == 8
    assert_render_redraws(out / "report.h5", out, tmp_path / "again")

    res = _run(
        "occlusion",
        "--model",
        user_net,
        *MODEL,
        "--data",
        photos / "c1" / "01.png",
        "--layer",
        "add",
        "--size",
        "8",
        "--stride",
        "8",
        "--out",
        tmp_path / "o.png",
    )
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["activation"].shape == (1, 4, 4)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["project", "--model", "usernet:make", *MODEL, "--layer", "relu_3", "--feature", "0"],
            "Error: Invalid value for --layer: no node named 'relu_3' in Res "
            "(closest: relu_2, relu_1, relu; see 'deconvviz layers --all')",
        ),
        (
            [
                "project",
                "--model",
                "usernet:with_softmax",
                *MODEL,
                "--layer",
                "head",
                "--feature",
                "0",
            ],
            "Error: node 'act' (Softmax) has no deconvnet rule, so 'head' cannot be projected "
            "through it (rules exist for: Conv2d",
        ),
        (
            ["report", "--model", "usernet:make", *MODEL, "--layer", "head"],
            "Error: node 'head' (Linear) has no spatial output (one value per channel), so it "
            "has no image patches for a report; choose a node with a (C, H, W) output",
        ),
        (
            ["layers", "--model", "usernet:untraceable", *MODEL],
            "Error: Branchy cannot be traced by torch.fx",
        ),
        (
            ["project", "--model", "usernet:make", *MODEL, "--layer", "2", "--feature", "0"],
            "Error: Invalid value for --layer: layer 2: numbered layers exist only for a plain "
            "conv stack, which Res is not; name a node instead",
        ),
    ],
)
def test_bad_layers_and_models_are_one_line(user_net, args, message, tmp_path):
    res = _run(*args, "--out", tmp_path / "x") if args[0] in ("project", "report") else _run(*args)
    assert res.exit_code in (1, 2), res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith(message), res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


LAZY = textwrap.dedent("""
    from torch import nn

    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.LazyLinear(5))

    def too_small():
        return nn.Sequential(nn.Conv2d(3, 4, 9), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
""")


def test_lazy_layers_take_their_shapes_from_the_input_size(user_module, tmp_path):
    user_module("lazynet", LAZY)
    a = deconvviz.load_model("lazynet:net", image_size=16)
    b = deconvviz.load_model("lazynet:net", image_size=16)
    assert a[4].weight.shape == (5, 4 * 8 * 8)  # 16 px halved by the pool
    assert a.meta["sha256"] == b.meta["sha256"]  # seeded like the rest
    assert torch.equal(a[4].weight, b[4].weight)
    r = CliRunner().invoke(main, ["layers", "--model", "lazynet:too_small", "--image-size", "8"])
    assert (
        r.exit_code == 1
        and r.output.startswith(
            "Error: lazynet:too_small has lazy layers, and a 8x8 image to set their shapes raised "
            "RuntimeError: "
        )
        and r.output.endswith("(give --image-size)\n")
    )
