"""Every script in experiments/ runs on a tiny model and tiny data made here, and its
PNG and HDF5 read back with the expected content."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deconvviz.data.cifar import CIFAR10_CLASSES as CLASSES

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def script(name):
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    return importlib.import_module(name)


@pytest.fixture
def tree(tmp_path):
    """train/ and test/ ImageFolder trees: 2 random 32x32 PNGs per CIFAR-10 class."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CLASSES:
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for k in range(2):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / name / f"{k}.png"
                )
    return tmp_path / "data"


@pytest.fixture
def ckpt(cifar_checkpoint):
    return cifar_checkpoint


def run(name, *args):
    result = CliRunner().invoke(script(name).main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_fig01_dog_layer1(tree, ckpt, tmp_path):
    r = run("fig01_dog_layer1", "--data", tree, "--model", ckpt, "--out", tmp_path / "o")
    png, h5 = tmp_path / "o" / "fig01_dog_layer1.png", tmp_path / "o" / "fig01_dog_layer1.h5"
    assert f"wrote {png}" in r.output and f"wrote {h5}" in r.output
    w, h = png_size(png)
    assert w > 600 and h > 300
    with h5py.File(h5) as f:
        assert f["projections"].shape == (32, 3, 32, 32)
        assert list(f["feature"][:]) == list(range(32))
        assert list(f["image_index"][:]) == [10]  # the first dog of train/ (sorted)
        assert f["image"].shape == (1, 3, 32, 32) and f.attrs["layer"] == 1
        assert f.attrs["mode"] == "map" and f.attrs["unpool"] == "switches"


def test_fig04_dog_layer2_second_dog_nearest(tree, ckpt, tmp_path):
    run(
        "fig04_dog_layer2",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--dog",
        1,
        "--unpool",
        "nearest",
    )
    with h5py.File(tmp_path / "fig04_dog_layer2.h5") as f:
        assert f["projections"].shape == (64, 3, 32, 32)
        assert list(f["image_index"][:]) == [11] and f.attrs["unpool"] == "nearest"
        assert f.attrs["layer"] == 2
    png_size(tmp_path / "fig04_dog_layer2.png")


@pytest.mark.parametrize(
    "name,layer,feature", [("fig02_layer1_feature7", 1, 7), ("fig05_layer2_feature9", 2, 9)]
)
def test_feature_across_images(tree, ckpt, tmp_path, name, layer, feature):
    run(name, "--data", tree, "--model", ckpt, "--out", tmp_path, "--count", 6, "--seed", 4)
    png_size(tmp_path / f"{name}.png")
    with h5py.File(tmp_path / f"{name}.h5") as f:
        idx = list(f["image_index"][:])
        assert len(idx) == 6 and len(set(idx)) == 6 and idx == sorted(idx)
        assert f["projections"].shape == (6, 3, 32, 32) and f["images"].shape == (6, 3, 32, 32)
        assert f.attrs["layer"] == layer and f.attrs["feature"] == feature
        first = idx
    run(name, "--data", tree, "--model", ckpt, "--out", tmp_path, "--count", 6, "--seed", 4)
    with h5py.File(tmp_path / f"{name}.h5") as f:
        assert list(f["image_index"][:]) == first  # seeded: the same images


def test_fig03_max_activations_finds_each_features_strongest_image(tree, ckpt, tmp_path):
    run("fig03_max_activations", "--data", tree, "--model", ckpt, "--out", tmp_path, "--batch", 12)
    png_size(tmp_path / "fig03_max_activations.png")
    from deconvviz import load_data, load_model

    model = load_model(ckpt)
    data = load_data(str(tree), model, split="train")
    with h5py.File(tmp_path / "fig03_max_activations.h5") as f:
        batch = list(f["batch_index"][:])
        assert len(batch) == 12 and f["projections"].shape == (32, 3, 32, 32)
        x = torch.stack([data[i][0] for i in batch])
        with torch.no_grad():
            peaks = model.features[:3](x).flatten(2).amax(dim=2)  # (12, 32), independent
        assert list(f["best_index"][:]) == [batch[int(i)] for i in peaks.argmax(dim=0)]
        np.testing.assert_allclose(f["max_activation"][:], peaks.amax(dim=0).numpy(), rtol=1e-5)


def test_fig06_top9(tree, ckpt, tmp_path):
    run(
        "fig06_top9",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--per-layer",
        3,
        "--top",
        4,
    )
    w, h = png_size(tmp_path / "fig06_top9.png")
    assert w > 600 and h > 200
    from deconvviz.store.report_read import read_report_h5

    report = read_report_h5(tmp_path / "fig06_top9.h5")
    assert sorted(report.layers) == [1, 2] and report.layers[2].k == 4
    assert report.layers[1].projection.shape[:2] == (32, 4)
    assert report.attrs["num_images"] == 20


def test_fig07_feature_evolution(tree, ckpt, tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    payload = torch.load(ckpt, weights_only=True)
    for epoch in (2, 10):
        payload["epochs"] = epoch
        torch.save(payload, folder / f"m-epoch{epoch}.pt")
    (folder / "m.pt").write_bytes(b"not an epoch checkpoint: ignored")
    run(
        "fig07_feature_evolution",
        "--data",
        tree,
        "--checkpoints",
        folder,
        "--out",
        tmp_path,
        "--per-layer",
        2,
    )
    png_size(tmp_path / "fig07_feature_evolution.png")
    with h5py.File(tmp_path / "fig07_feature_evolution.h5") as f:
        assert list(f["epoch"][:]) == [2, 10]  # ordered by epoch, not name
        assert list(f["layer"][:]) == [1, 1, 2, 2]
        assert f["epoch2/layer1/projections"].shape == (2, 3, 32, 32)
        assert f["epoch10/layer2/image_index"].shape == (2,)
        assert f.attrs["scanned"] == 20


def test_fig14_matched_evolution(tree, ckpt, tmp_path):
    """Three epochs: the second is the first with layer 1's channels reversed (and layer 2's
    inputs to match), the third is the first again: the chains must undo the reversal."""
    folder = tmp_path / "ck"
    folder.mkdir()
    payload = torch.load(ckpt, weights_only=True)
    sd = payload["state_dict"]
    rev = torch.arange(sd["features.0.bias"].shape[0] - 1, -1, -1)
    for epoch, flip in ((1, False), (2, True), (3, False)):
        p = {**payload, "epochs": epoch, "state_dict": dict(sd)}
        if flip:
            p["state_dict"]["features.0.weight"] = sd["features.0.weight"][rev]
            p["state_dict"]["features.0.bias"] = sd["features.0.bias"][rev]
            p["state_dict"]["features.3.weight"] = sd["features.3.weight"][:, rev]
        torch.save(p, folder / f"m-epoch{epoch}.pt")
    run(
        "fig14_matched_evolution",
        "--data",
        tree,
        "--checkpoints",
        folder,
        "--out",
        tmp_path,
        "--top",
        2,
        "--min-correlation",
        0.9,
    )
    for layer in (1, 2):
        png_size(tmp_path / f"fig14_matched_evolution_layer{layer}" / "compare.png")
    with h5py.File(tmp_path / "fig14_matched_evolution_layer1" / "compare.h5") as f:
        assert [str(n) for n in f.attrs["networks"]] == ["epoch 1", "epoch 2", "epoch 3"]
        chains = f["chains"][()]
        n = chains.shape[1]
        assert chains[2].tolist() == list(range(n)) and chains[0].tolist() == list(range(n))
        assert chains[1].tolist() == rev.tolist()
    with h5py.File(tmp_path / "fig14_matched_evolution_layer2" / "compare.h5") as f:
        chains = f["chains"][()]
        assert (chains == np.arange(chains.shape[1])).all()  # layer 2 is unchanged


def test_fig08_occlusion(tree, ckpt, tmp_path):
    run(
        "fig08_occlusion",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--count",
        2,
        "--size",
        16,
        "--stride",
        8,
    )
    w, h = png_size(tmp_path / "fig08_occlusion.png")
    assert w > 600
    with h5py.File(tmp_path / "fig08_occlusion.h5") as f:
        assert f["activation"].shape == (2, 3, 3) and f["predicted"].shape == (2, 3, 3)
        assert f.attrs["layer"] == 2


def test_fig09_switches_vs_nearest(tree, ckpt, tmp_path):
    run(
        "fig09_switches_vs_nearest",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--count",
        3,
    )
    png_size(tmp_path / "fig09_switches_vs_nearest.png")
    with h5py.File(tmp_path / "fig09_switches_vs_nearest.h5") as f:
        for layer in (1, 2):
            assert f[f"layer{layer}/switches"].shape == (3, 3, 32, 32)
            assert f[f"layer{layer}/nearest"].shape == (3, 3, 32, 32)
            cos = f[f"layer{layer}/cosine_similarity"][:]
            assert cos.shape == (3,) and np.all(np.abs(cos[np.isfinite(cos)]) <= 1 + 1e-9)


def test_fig10_rules_and_randomised(tree, ckpt, tmp_path):
    # (the tiny model was itself initialised with seed 0, so randomise with another seed)
    run(
        "fig10_rules_and_randomised",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--count",
        2,
        "--random-seed",
        5,
    )
    png_size(tmp_path / "fig10_rules_and_randomised.png")
    with h5py.File(tmp_path / "fig10_rules_and_randomised.h5") as f:
        for net in ("trained", "randomised"):
            for rule in ("deconvnet", "guided", "gradient"):
                assert f[f"{net}/{rule}/projections"].shape == (2, 3, 32, 32)
        # the randomised network really has other weights: other projections
        assert not np.allclose(
            f["trained/deconvnet/projections"][:], f["randomised/deconvnet/projections"][:]
        )


def test_randomized_copy_leaves_the_model_alone(ckpt):
    from deconvviz import load_model
    from deconvviz.engine.analysis import randomized_copy

    model = load_model(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = randomized_copy(model, 5), randomized_copy(model, 5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    w = "features.0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])  # seeded
    assert not torch.equal(a.state_dict()[w], before[w])


def test_rank_correlation_against_a_hand_computed_case():
    from deconvviz.engine.analysis import rank_correlation

    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 2, 2)
    assert rank_correlation(a, a * 5) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(1.0)  # magnitudes
    b = torch.tensor([4.0, 3.0, 2.0, 1.0]).view(1, 2, 2)
    assert rank_correlation(a, b) == pytest.approx(-1.0)
    c = torch.tensor([1.0, 1.0, 2.0, 3.0]).view(1, 2, 2)  # ties: ranks 1.5 1.5 3 4
    assert rank_correlation(a, c) == pytest.approx(0.9486832980505138)
    assert np.isnan(rank_correlation(a, torch.zeros(1, 2, 2)))


@pytest.mark.parametrize(
    "name,args,message",
    [
        ("fig01_dog_layer1", ["--data", "/nonexistent"], "does not exist"),
        ("fig04_dog_layer2", ["--dog", "5"], "2 images of class 'dog'"),
        ("fig02_layer1_feature7", ["--model", "/nonexistent.pt"], "does not exist"),
        ("fig07_feature_evolution", ["--checkpoints", "/nonexistent"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(tree, ckpt, tmp_path, name, args, message):
    base = ["--data", str(tree), "--out", str(tmp_path / "o")]
    if name != "fig07_feature_evolution":
        base += ["--model", str(ckpt)]
    result = CliRunner().invoke(script(name).main, base + args)
    assert result.exit_code == 1, result.output
    out = result.output.strip()
    assert out.startswith("Error:") and message in out and len(out.splitlines()) == 1
    assert "Traceback" not in out


def test_run_all_trains_the_checkpoints_and_times_each_script(tree, ckpt, tmp_path):
    r = run(
        "run_all",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path / "figs",
        "--train-dir",
        tmp_path / "ck",
        "--train-epochs",
        2,
        "--save-epochs",
        "1,2",
        "--only",
        "1,7,8",
    )
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pt")) == [
        "evolution-epoch1.pt",
        "evolution-epoch2.pt",
        "evolution.pt",
    ]
    assert sorted(p.name for p in (tmp_path / "figs").glob("*.png")) == [
        "fig01_dog_layer1.png",
        "fig07_feature_evolution.png",
        "fig08_occlusion.png",
    ]
    for line in (
        "train (deconvviz train)",
        "fig01_dog_layer1",
        "fig07_feature_evolution",
        "fig08_occlusion",
        "total",
    ):
        assert any(
            row.strip().startswith(line) and row.strip().endswith("s")
            for row in r.output.splitlines()
        ), line
    with h5py.File(tmp_path / "figs" / "fig07_feature_evolution.h5") as f:
        assert list(f["epoch"][:]) == [1, 2]


def test_run_all_lists_every_figure_script():
    names = script("run_all").scripts()
    assert [n[:5] for n in names] == sorted({n[:5] for n in names})
    for n in (
        "fig01",
        "fig02",
        "fig03",
        "fig04",
        "fig05",
        "fig06",
        "fig07",
        "fig08",
        "fig09",
        "fig10",
        "fig11",
        "fig12",
        "fig13",
        "fig14",
    ):
        assert any(x.startswith(n) for x in names), n


def test_fig11_invariance(tree, ckpt, tmp_path):
    run(
        "fig11_invariance",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--count",
        2,
        "--translate",
        "-2:2:1",
        "--scale",
        "0.8,1,1.5",
        "--rotate",
        "0:360:180",
    )
    w, h = png_size(tmp_path / "fig11_invariance.png")
    assert w > 800 and h > 500
    from deconvviz import load_data, load_model
    from deconvviz.engine.invariance import transform_images

    model = load_model(ckpt)
    with h5py.File(tmp_path / "fig11_invariance.h5") as f:
        assert list(f.attrs["layers"]) == ["layer 1", "layer 2", "classifier input"]
        assert list(f["translate/amount"][:]) == [-2, -1, 0, 1, 2]
        d = f["translate/distance"][:]
        assert (
            d.shape == (3, 2, 5) and np.all(d[:, :, 2] == 0) and np.all(d[:, :, [0, 1, 3, 4]] > 0)
        )
        assert np.all(f["rotate/distance"][:][:, :, [0, 2]] == 0)  # 0 and 360 degrees
        assert np.all(f["scale/distance"][:][:, :, 1] == 0)  # factor 1
        p = f["scale/probability"][:]
        assert p.shape == (2, 3) and np.all((p >= 0) & (p <= 1))
        idx = list(f["image_index"][:])
        data = load_data(str(tree), model, split="test")
        x = torch.stack([data[i][0] for i in idx])
        grey = torch.full((3,), (0.5 - 0.5) / 0.25)
        with torch.no_grad():
            a = model.features[:3](x).flatten(1).double()
            b = model.features[:3](transform_images(x, "translate", 1, grey)).flatten(1).double()
        np.testing.assert_allclose(d[0, :, 3], (b - a).norm(dim=1).numpy(), rtol=1e-5)
        norm = f["translate/mean_feature_norm"][:]
        np.testing.assert_allclose(norm[0], a.norm(dim=1).mean().item(), rtol=1e-6)
        np.testing.assert_allclose(f["translate/normalised_distance"][:], d / norm[:, None, None])


def test_fig12_correspondence(tree, ckpt, tmp_path):
    run(
        "fig12_correspondence",
        "--data",
        tree,
        "--model",
        ckpt,
        "--out",
        tmp_path,
        "--images",
        2,
        "--draws",
        2,
        "--seed",
        1,
    )
    png_size(tmp_path / "fig12_correspondence.png")
    from deconvviz import load_data, load_model
    from deconvviz.engine.correspondence import delta_score

    model = load_model(ckpt)
    with h5py.File(tmp_path / "fig12_correspondence.h5") as f:
        assert list(f.attrs["regions"]) == ["upper left", "upper centre", "centre", "random place"]
        delta, total = f["delta"][:], f["delta_sum"][:]
        assert delta.shape == (4, 3, 2) and total.shape == (4, 3, 2)
        np.testing.assert_allclose(f["delta_mean"][:], delta.mean(axis=2))
        np.testing.assert_allclose(f["delta_std"][:], delta.std(axis=2))
        idx, boxes = f["image_index"][:], f["boxes"][:]
        assert sorted(idx[0]) == [10, 11]  # the two test dogs
        assert boxes[2, 0].tolist() == [[10, 10, 22, 22]] * 2  # the centre region
        # region "centre", draw 0, layer 2, computed here by hand
        data = load_data(str(tree), model, split="test")
        x = torch.stack([data[int(i)][0] for i in idx[0]])
        masked = x.clone()
        masked[:, :, 10:22, 10:22] = 0.0  # grey in this normalisation
        with torch.no_grad():
            eps = model.features(x).flatten(1).double() - model.features(masked).flatten(1).double()
        score = delta_score(eps)
        assert total[2, 1, 0] == score.total
        assert delta[2, 1, 0] == pytest.approx(score.mean)


def test_fig13_filters(tree, ckpt, tmp_path):
    r = run("fig13_filters", "--data", tree, "--model", ckpt, "--out", tmp_path)
    png_size(tmp_path / "fig13_filters.png")
    assert "never fire on 20 images" in r.output
    with h5py.File(tmp_path / "fig13_filters.h5") as f:
        rms = f["rms"][:]
        assert rms.shape == (32,) and list(f["order"][:]) == list(np.argsort(-rms, kind="stable"))
        assert f["max_activation"].shape == (32,) and f.attrs["num_images"] == 20


@pytest.mark.parametrize(
    "name,args,message",
    [
        ("fig11_invariance", ["--translate", "5:0:1"], "translate range '5:0:1' has no points"),
        ("fig11_invariance", ["--rotate", ""], "rotate range '' has no points"),
        ("fig11_invariance", ["--layers", "1,5"], "layer 5 is out of range"),
        ("fig12_correspondence", ["--box", "4,4,4,9"], "mask box 0 (4, 4, 4, 9) is empty"),
        ("fig12_correspondence", ["--box", "9,0,4,8"], "mask box 0 (9, 0, 4, 8) is inverted"),
        ("fig12_correspondence", ["--box", "0,0,40,8"], "leaves the 32x32 image"),
        ("fig12_correspondence", ["--box", "1,2,3"], "is not Y0,X0,Y1,X1"),
        ("fig12_correspondence", ["--layers", "classifier,3"], "layer 3 is out of range"),
        ("fig12_correspondence", ["--images", "3"], "has 2 images of class 'dog'"),
        ("fig13_filters", ["--layer", "4"], "layer 4 is out of range"),
    ],
)
def test_new_figures_bad_input_is_one_line_and_writes_nothing(
    tree, ckpt, tmp_path, name, args, message
):
    out = tmp_path / "new" / "o"
    result = CliRunner().invoke(
        script(name).main, ["--data", str(tree), "--model", str(ckpt), "--out", str(out)] + args
    )
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.startswith("Error:") and message in text and len(text.splitlines()) == 1
    # The folders the run created are gone again; an existing one is left as it was.
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "earlier.txt").write_text("x")
    result = CliRunner().invoke(
        script(name).main,
        ["--data", str(tree), "--model", str(ckpt), "--out", str(tmp_path / "kept")] + args,
    )
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["earlier.txt"]


def test_run_all_runs_the_new_figures(tree, ckpt, tmp_path):
    r = run(
        "run_all", "--data", tree, "--model", ckpt, "--out", tmp_path / "figs", "--only", "11,13"
    )
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "fig11_invariance.h5",
        "fig11_invariance.png",
        "fig13_filters.h5",
        "fig13_filters.png",
    ]
    assert any(
        row.strip().startswith("fig11_invariance") and row.strip().endswith("s")
        for row in r.output.splitlines()
    )
