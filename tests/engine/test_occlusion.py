"""Occlusion sensitivity: the library function against an independent loop, and the command."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deconvviz import DeconvvizError, load_model
from deconvviz.cli import main as cli
from deconvviz.data.cifar import CIFAR10_CLASSES as CLASSES
from deconvviz.engine.occlusion import fill_value, occlude, occluder_positions, occlusion_maps


def _loop_reference(model, image, label, layer_end, feature, size, ys, xs, fill):
    """One forward pass per square position, square painted pixel by pixel."""
    act = np.zeros((len(ys), len(xs)))
    prob = np.zeros((len(ys), len(xs)))
    pred = np.zeros((len(ys), len(xs)), dtype=np.int64)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            x = image.clone()
            for c in range(x.shape[0]):
                x[c, y0 : y0 + size, x0 : x0 + size] = fill[c]
            with torch.no_grad():
                fmap = model.features[:layer_end](x[None])[0, feature]
                p = torch.softmax(model(x[None]).double(), dim=1)[0]
            act[i, j] = float(fmap.double().sum())
            prob[i, j] = float(p[label])
            pred[i, j] = int(p.argmax())
    return act, prob, pred


@pytest.fixture
def tiny_tree(tmp_path):
    """An ImageFolder tree of 10 random 32x32 PNGs, one per CIFAR-10 class."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "tree" / name / "0.png"
        )
    return tmp_path / "tree"


def test_positions_cover_the_border_and_reject_bad_sizes():
    assert occluder_positions(32, 8, 5) == [0, 5, 10, 15, 20, 24]
    assert occluder_positions(32, 8, 8) == [0, 8, 16, 24]
    assert occluder_positions(5, 5, 3) == [0]
    with pytest.raises(DeconvvizError, match="size"):
        occluder_positions(32, 33, 2)
    with pytest.raises(DeconvvizError, match="stride"):
        occluder_positions(32, 4, 0)


def test_fill_values_are_the_normalised_grey_mean_or_pixel():
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.5]
    assert torch.allclose(
        fill_value("grey", mean, std), torch.tensor([0.5, 0.0, -0.2], dtype=torch.float64)
    )
    assert torch.equal(fill_value("mean", mean, std), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(
        fill_value("1", mean, std), torch.tensor([3.0, 2.0, 0.8], dtype=torch.float64)
    )
    for bad in ("pink", 1.5):
        with pytest.raises(DeconvvizError, match="fill"):
            fill_value(bad, mean, std)


def test_occlude_paints_exactly_the_square():
    img = torch.arange(2 * 6 * 5, dtype=torch.float32).view(2, 6, 5)
    out = occlude(img, [0, 3], [1, 2], 3, torch.tensor([-1.0, -2.0]))
    assert out.shape == (4, 2, 6, 5)
    k = 1 * 2 + 1  # ys[1] = 3, xs[1] = 2
    expect = img.clone()
    expect[0, 3:6, 2:5] = -1.0
    expect[1, 3:6, 2:5] = -2.0
    assert torch.equal(out[k], expect)
    assert torch.equal(img, torch.arange(60, dtype=torch.float32).view(2, 6, 5))  # untouched


@pytest.mark.parametrize("layer,fill", [(2, "grey"), (1, "mean")])
def test_maps_match_an_independent_loop(tiny_checkpoint, layer, fill):
    model = load_model(tiny_checkpoint)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([3, -1])
    size, stride = 9, 10
    res = occlusion_maps(
        model, images, labels, layer=layer, size=size, stride=stride, fill=fill, batch_size=5
    )
    ys = xs = [0, 10, 20, 23]
    assert res.ys.tolist() == ys and res.xs.tolist() == xs
    assert res.activation.shape == res.probability.shape == res.predicted.shape == (2, 4, 4)
    end = {1: 3, 2: 6}[layer]
    mean, std = [0.5] * 3, [0.25] * 3
    fill_px = [(0.5 - m) / s for m, s in zip(mean, std)] if fill == "grey" else [0.0] * 3
    with torch.no_grad():
        base = model.features[:end](images)
        p0 = torch.softmax(model(images).double(), dim=1)
    for b in range(2):
        feature = int(base[b].flatten(1).amax(dim=1).argmax())  # strongest single activation
        label = int(labels[b]) if labels[b] >= 0 else int(p0[b].argmax())
        assert int(res.feature[b]) == feature and int(res.target[b]) == label
        assert int(res.label[b]) == int(labels[b])  # -1 stays -1 (unlabelled)
        act, prob, pred = _loop_reference(
            model, images[b], label, end, feature, size, ys, xs, fill_px
        )
        np.testing.assert_allclose(res.activation[b].numpy(), act, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(res.probability[b].numpy(), prob, rtol=1e-5, atol=1e-7)
        assert np.array_equal(res.predicted[b].numpy(), pred)
        assert float(res.base_activation[b]) == pytest.approx(
            float(base[b, feature].sum()), rel=1e-5
        )
        assert float(res.base_probability[b]) == pytest.approx(float(p0[b, label]), rel=1e-6)


def test_explicit_feature_and_errors(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    images = torch.zeros(1, 3, 32, 32)
    res = occlusion_maps(model, images, [0], layer=2, feature=5, size=16, stride=16)
    assert res.feature.tolist() == [5] and res.activation.shape == (1, 2, 2)
    with pytest.raises(DeconvvizError, match="feature"):
        occlusion_maps(model, images, [0], layer=2, feature=64)
    with pytest.raises(DeconvvizError, match="layer 3"):
        occlusion_maps(model, images, [0], layer=3)
    with pytest.raises(DeconvvizError, match="label"):
        occlusion_maps(model, images, [10])
    with pytest.raises(DeconvvizError, match="labels"):
        occlusion_maps(model, images, [0, 1])


def test_command_writes_png_and_h5(cifar_checkpoint, tiny_tree, tmp_path):
    out = tmp_path / "occ.png"
    r = CliRunner().invoke(
        cli,
        [
            "occlusion",
            "--model",
            str(cifar_checkpoint),
            "--data",
            str(tiny_tree),
            "--index",
            "0",
            "--index",
            "7",
            "--size",
            "8",
            "--stride",
            "4",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output and f"wrote {out.with_suffix('.h5')}" in r.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 300
    with h5py.File(out.with_suffix(".h5")) as f:
        assert f["activation"].shape == (2, 7, 7)
        assert f["probability"].shape == (2, 7, 7) and f["predicted"].dtype == np.int64
        assert f["images"].shape == (2, 3, 32, 32) and f["images"].dtype == np.uint8
        assert list(f["index"][:]) == [0, 7] and list(f["label"][:]) == [0, 7]
        assert f.attrs["layer"] == 2 and f.attrs["size"] == 8 and f.attrs["fill_name"] == "grey"
        assert np.all((f["probability"][:] >= 0) & (f["probability"][:] <= 1))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--index", "10"], "out of range"),
        (["--size", "40"], "size"),
        (["--data", "/nonexistent/x"], "does not exist"),
        (["--fill", "pink"], "fill"),
    ],
)
def test_command_bad_input_is_one_line(cifar_checkpoint, tiny_tree, tmp_path, args, message):
    r = CliRunner().invoke(
        cli,
        [
            "occlusion",
            "--model",
            str(cifar_checkpoint),
            "--data",
            str(tiny_tree),
            "--out",
            str(tmp_path / "o.png"),
        ]
        + args,
    )
    assert r.exit_code == 1
    assert "Traceback" not in r.output and message in r.output
    assert r.output.strip().startswith("Error:") and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.h5").exists()


def test_command_refuses_data_whose_classes_differ_from_the_model(
    tiny_checkpoint, tiny_tree, tmp_path
):
    r = CliRunner().invoke(
        cli,
        [
            "occlusion",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(tiny_tree),
            "--out",
            str(tmp_path / "o.png"),
        ],
    )
    assert r.exit_code == 1 and "classes" in r.output and "Traceback" not in r.output


def test_an_unlabelled_image_stays_unlabelled(tmp_path):
    """A loose image has no label: -1 in the file and 'unlabelled' in the title, never the
    prediction (whose probability the map then shows)."""
    import h5py
    from click.testing import CliRunner
    from PIL import Image

    from deconvviz.cli import main as cli
    from deconvviz.data.builtin import synthetic_images

    images, _ = synthetic_images(1, seed=5)
    Image.fromarray(images[0].permute(1, 2, 0).numpy()).save(tmp_path / "loose.png")
    res = CliRunner().invoke(
        cli,
        [
            "occlusion",
            "--data",
            str(tmp_path / "loose.png"),
            "--size",
            "8",
            "--stride",
            "8",
            "--out",
            str(tmp_path / "o.png"),
        ],
    )
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["label"][()].tolist() == [-1]
        assert f["target"][()].tolist() == f["base_predicted"][()].tolist()


def test_unlabelled_title(tiny_checkpoint):
    from deconvviz.engine.occlusion import occlusion_maps
    from deconvviz.models.checkpoint import load_model
    from deconvviz.render.occlusion import occlusion_figure

    model = load_model(tiny_checkpoint)
    x = torch.randn(2, 3, 32, 32)
    maps = occlusion_maps(model, x, torch.tensor([-1, 3]), layer=2, size=16, stride=16)
    assert maps.label.tolist() == [-1, 3]
    assert maps.target[0] == maps.base_predicted[0] and maps.target[1] == 3
    classes = list(model.meta["class_names"])
    fig = occlusion_figure(maps, np.zeros((2, 32, 32, 3)), classes, "t")
    titles = [ax.get_title() for ax in fig.axes]
    assert any(f"unlabelled (predicted {classes[int(maps.target[0])]})" in t for t in titles)
    assert any(f"true: {classes[3]}" in t for t in titles)
    assert not any(t.startswith(f"\ntrue: {classes[int(maps.target[0])]}") for t in titles[:1])
