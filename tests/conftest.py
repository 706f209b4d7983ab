"""Shared fixtures: tiny hand-weighted models, an independent autograd reference,
small checkpoints and data made in the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# Fixtures of their own module, found by name like these (tests/browser_helpers.py).
pytest_plugins = ["browser_helpers"]

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test decodes into its own cache, except the shared CIFAR-10 cache."""
    if "DECONVVIZ_TEST_CACHE" in os.environ:
        monkeypatch.setenv("DECONVVIZ_CACHE", os.environ["DECONVVIZ_TEST_CACHE"])
    else:
        monkeypatch.setenv("DECONVVIZ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def needs_shared_cifar():
    return pytest.mark.skipif(
        not SHARED_CIFAR.is_dir(),
        reason=f"the CIFAR-10 copy at {SHARED_CIFAR} is not here (it sits beside the repo in CI)",
    )


def tiny_model() -> nn.Sequential:
    """Two hand-set layers, float64.

    layer 1: conv 1->2 (2x2; channel 0 = x[i,j] - x[i+1,j+1], channel 1 =
    x[i,j+1] + x[i+1,j] - 10) -> ReLU -> 2x2 max pool;
    layer 2: 1x1 conv 2->1 (channel 0 minus channel 1) -> ReLU.
    """
    conv1 = nn.Conv2d(1, 2, kernel_size=2, bias=True)
    conv2 = nn.Conv2d(2, 1, kernel_size=1, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]], [[[0.0, 1.0], [1.0, 0.0]]]]))
        conv1.bias.copy_(torch.tensor([0.0, -10.0]))
        conv2.weight.copy_(torch.tensor([[[[1.0]], [[-1.0]]]]))
    return nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU()).double()


TINY_INPUT = torch.tensor(
    [
        [
            [
                [3.0, 1.0, 4.0, 1.0, 5.0],
                [9.0, 2.0, 6.0, 5.0, 3.0],
                [5.0, 8.0, 9.0, 7.0, 9.0],
                [3.0, 2.0, 3.0, 8.0, 4.0],
                [6.0, 2.0, 6.0, 4.0, 3.0],
            ]
        ]
    ],
    dtype=torch.float64,
)


def alexnet_like(seed: int = 0) -> nn.Sequential:
    """A small AlexNet-shaped stack: strides, overlapping 3x3/2 pools, dilation, ceil mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(8, 12, kernel_size=3, padding=2, dilation=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(12, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
    ).double()


def vgg11_features(blocks: int = 11) -> nn.Sequential:
    """VGG-11's first modules (3x3 pad 1 convs, 2x2 pools), seeded random weights."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    return make_layers(cfgs["A"])[:blocks]


def random_seeds(info, n_images: int, count: int, seed: int):
    """``(image_index, feature, position)`` of ``count`` random seeds of layer ``info``,
    the first four at the corners of its output (windows clipped at the image)."""
    g = torch.Generator().manual_seed(seed)
    oh, ow = info.output_size
    idx = torch.randint(0, n_images, (count,), generator=g)
    feat = torch.randint(0, info.features, (count,), generator=g)
    pos = torch.stack(
        [torch.randint(0, oh, (count,), generator=g), torch.randint(0, ow, (count,), generator=g)],
        dim=1,
    )
    pos[:4] = torch.tensor([[0, 0], [0, ow - 1], [oh - 1, 0], [oh - 1, ow - 1]])
    return idx, feat, pos


def random_topk(info, image_ids, k: int, generator: torch.Generator):
    """A :class:`TopK` of layer ``info`` with random positions on random ``image_ids``."""
    from deconvviz.engine.topk import TopK

    F_, (oh, ow) = info.features, info.output_size
    pos = torch.stack(
        [
            torch.randint(0, oh, (F_, k), generator=generator),
            torch.randint(0, ow, (F_, k), generator=generator),
        ],
        dim=-1,
    )
    ids = torch.as_tensor(list(image_ids))
    idx = ids[torch.randint(0, len(ids), (F_, k), generator=generator)]
    return TopK(torch.zeros(F_, k), idx, pos)


class _RuleReLU(torch.autograd.Function):
    """ReLU whose backward follows a rule (the independent reference for the tests)."""

    @staticmethod
    def forward(ctx, x, rule):
        ctx.rule = rule
        ctx.save_for_backward(x > 0)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp(min=0), None
        if ctx.rule == "guided":
            return g.clamp(min=0) * mask, None
        return g * mask, None


def _sum_pool(h, m):
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
    ones = torch.ones((h.shape[1], 1) + k, dtype=h.dtype)
    return F.conv2d(
        h, ones, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=h.shape[1]
    )


def reference_projection(
    stack, image, layer_end, feature, mode="max", rule="deconvnet", unpool="switches", position=None
):
    """torch.autograd.grad of the seeded activation, every ReLU's backward set by ``rule``.

    ``image`` (1, C, H, W). ``nearest`` unpooling is the gradient of a sum pool
    standing in for the max pool on the way back.
    """
    x = image.clone().requires_grad_(True)
    h = x
    for m in list(stack)[:layer_end]:
        if isinstance(m, nn.Conv2d):
            h = F.conv2d(h, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.ReLU):
            h = _RuleReLU.apply(h, rule)
        else:
            pooled = F.max_pool2d(
                h, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode
            )
            if unpool == "nearest":
                st = m.stride if isinstance(m.stride, int) else m.stride[0]
                s = _sum_pool(F.pad(h, (0, st, 0, st)) if m.ceil_mode else h, m)
                s = s[..., : pooled.shape[-2], : pooled.shape[-1]]
                pooled = pooled.detach() + (s - s.detach())  # value exact, gradient of s
            h = pooled
    fmap = h[0, feature]
    if mode == "map":
        target = (fmap * fmap.detach()).sum()
    else:
        if position is None:
            flat = int(fmap.detach().reshape(-1).argmax())
            position = (flat // fmap.shape[1], flat % fmap.shape[1])
        v = fmap[position[0], position[1]]
        target = v * v.detach()
    (grad,) = torch.autograd.grad(target, x, allow_unused=True)
    return torch.zeros_like(image) if grad is None else grad


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A CifarCNN checkpoint with random weights, trained on nothing (fast)."""
    from deconvviz.data.builtin import BUILTIN_CLASSES
    from deconvviz.models.architectures import build_model
    from deconvviz.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("cifar_cnn", num_classes=10, hidden=16)
    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path,
        model,
        arch="cifar_cnn",
        config={"num_classes": 10, "hidden": 16},
        class_names=BUILTIN_CLASSES,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        epochs=0,
        test_accuracy=0.1,
    )
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A small ImageFolder tree (two classes, 40 generated 32x32 PNGs) for the
    command-line tests: decoded once, then read from the decode cache."""
    from PIL import Image

    from deconvviz.data.builtin import synthetic_images

    root = tmp_path_factory.mktemp("folder")
    images, _ = synthetic_images(40, seed=2)
    for i in range(40):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    return root


@pytest.fixture
def cifar_checkpoint(tiny_checkpoint):
    """The tiny checkpoint, its classes renamed to CIFAR-10's."""
    from deconvviz.data.cifar import CIFAR10_CLASSES

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["class_names"] = list(CIFAR10_CLASSES)
    torch.save(payload, tiny_checkpoint)
    return tiny_checkpoint


@pytest.fixture
def offline(monkeypatch):
    """No network: every connection attempt fails at once."""
    import socket

    def refuse(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def assert_close(got: torch.Tensor, want: torch.Tensor, msg=None) -> None:
    """Two different computations of the same numbers agree to the house tolerance: relative to
    the largest magnitude of ``want``, 1e-12 in float64 and 1e-5 in float32 (two kernels may
    round the last bit differently on the next torch; ``torch.equal`` is only for the same code
    computing the same bytes)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (msg, got.shape, want.shape)
    tol = 1e-12 if want.dtype == torch.float64 else 1e-5
    scale = float(want.abs().max()) if want.numel() else 0.0
    err = float((got - want).detach().abs().max()) if want.numel() else 0.0
    assert err <= tol * max(scale, 1e-300), (msg, err, scale)


def generated_source(n: int, dup: bool = False):
    """An :class:`~deconvviz.data.source.ImageSource` of ``n`` generated images
    (optionally followed by exact duplicates, for ties).

    Made directly with ``synthetic_images``: generating the whole 2,000-image
    builtin split would cost more than the tests themselves.
    """
    from deconvviz.data.builtin import BUILTIN_CLASSES, synthetic_images
    from deconvviz.data.source import ImageSource

    images, labels = synthetic_images(n, seed=1)
    if dup:  # images 0..n-1 followed by the same images again: every value ties exactly
        images, labels = torch.cat([images, images]), torch.cat([labels, labels])
    return ImageSource(
        description=f"generated[:{n}]",
        kind="builtin",
        split="test",
        labels=labels,
        class_names=BUILTIN_CLASSES,
        images=images,
    )


def folder_bytes(folder: Path, suffix: str = "") -> dict:
    """Every file under ``folder`` whose name ends in ``suffix``: ``{relative path: bytes}``."""
    return {
        p.relative_to(folder): p.read_bytes()
        for p in sorted(folder.rglob(f"*{suffix}"))
        if p.is_file()
    }


def assert_render_redraws(h5: Path, drawn: Path, out: Path, html: bool = False):
    """``deconvviz render H5 --out OUT`` redraws from the file alone what was drawn when it
    was written into ``drawn``: the same PNGs byte for byte (the same code draws the same
    bytes), or with ``html`` the same web report (``site/``), where only the index's date line
    may differ. Returns click's result (its output names what was written)."""
    from click.testing import CliRunner

    from deconvviz.cli import main

    args = ["render", str(h5), "--out", str(out)] + (["--html"] if html else [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    if html:
        a, b = folder_bytes(drawn / "site"), folder_bytes(out / "site")
        assert a and a.keys() == b.keys()
        assert [p for p in a if a[p] != b[p]] == [Path("index.html")]  # its date line
    else:
        a, b = folder_bytes(drawn, ".png"), folder_bytes(out, ".png")
        assert a and sorted(a) == sorted(b)
        assert [p for p in a if a[p] != b[p]] == []
    return r


class _RunsCommand:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def bad_torch_files(tmp_path):
    """``({path: why}, marker)``: files that are no checkpoint or state dict, each with the
    reason deconvviz must give, built here; two of them are pickles that would create
    ``marker`` (``touch``) if they were ever unpickled."""
    import pickle
    import zipfile

    folder = tmp_path / "bad_files"
    folder.mkdir()
    good = folder / "good.pt"
    torch.save({"w": torch.ones(2, 2)}, good)
    data = good.read_bytes()
    good.unlink()
    marker = tmp_path / "PWNED"
    runs = _RunsCommand(f"touch {marker}")
    evil = (
        f"it is a pickle that imports Python objects ({os.system.__module__}.system); "
        "deconvviz loads only tensors and plain values and never runs code from a file"
    )
    kinds = {
        "notes.txt": (
            "it is a text file, not one written by torch.save",
            lambda p: p.write_text("epoch 1: loss 2.3\nepoch 2: loss 1.9\n"),
        ),
        "empty.pt": ("the file is empty", lambda p: p.write_bytes(b"")),
        "truncated.pt": (
            "it is damaged or truncated (a torch.save zip archive without its end)",
            lambda p: p.write_bytes(data[: len(data) // 2]),
        ),
        "archive.zip": (
            "it is a zip archive that torch.save did not write",
            lambda p: zipfile.ZipFile(p, "w").writestr("readme.txt", "hello"),
        ),
        "plain.pkl": (
            "it is a pickle that torch.save did not write (or it is damaged)",
            lambda p: p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4)),
        ),
        "array.npy": (
            "it is not a file written by torch.save (or it is damaged)",
            lambda p: p.write_bytes(b"\x93NUMPY\x01\x00v\x00" + bytes(range(200, 256))),
        ),
        "evil.pkl": (evil, lambda p: p.write_bytes(pickle.dumps(runs, protocol=2))),
        "evil.pt": (evil, lambda p: torch.save({"w": runs}, p)),
    }
    files = {}
    for name, (why, write) in kinds.items():
        write(folder / name)
        files[folder / name] = why
    return files, marker


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``write(name, source)``: a module of the user's own networks, importable as ``name``
    for ``--model name:function`` (a fresh import in every test)."""
    import sys

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)

    return write
