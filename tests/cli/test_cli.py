"""The command line through click's CliRunner: outputs read back, errors pinned."""

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deconvviz import __version__, load_model
from deconvviz.cli import main
from deconvviz.data.resolve import resolve_source
from deconvviz.data.source import normalize
from deconvviz.engine.deconv.deconvnet import deconvolve
from deconvviz.store.projection import read_projection_h5


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output
    for cmd in ("train", "evaluate", "info", "layers", "project"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "--model" in r.output or "--data" in r.output


def test_train_info_evaluate(tmp_path):
    out = tmp_path / "new" / "folder" / "m.pt"  # train creates its output folder
    tmp_path = out.parent
    r = run(
        "train",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--quiet",
        "--out",
        out,
        "--save-epochs",
        "1",
        "--seed",
        "3",
    )
    assert r.exit_code == 0, r.output
    assert out.is_file() and (tmp_path / "m-epoch1.pt").is_file()
    assert "test accuracy:" in r.output
    meta = torch.load(out, weights_only=True)
    assert meta["epochs"] == 2 and len(meta["history"]["test_accuracy"]) == 2
    assert meta["train_data"]["source"] == "builtin:train"
    r = run("info", "--model", out)
    assert r.exit_code == 0 and "arch: cifar_cnn" in r.output
    r = run("evaluate", "--model", out)
    assert r.exit_code == 0
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("accuracy: ")
    assert abs(float(last.split()[1]) - meta["test_accuracy"]) < 1e-4


def test_train_is_deterministic(tmp_path):
    for name in ("a.pt", "b.pt"):
        r = run("train", "--epochs", "1", "--quiet", "--out", tmp_path / name, "--seed", "5")
        assert r.exit_code == 0, r.output
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "args,code,msg",
    [
        (
            ["train", "--data", "/no/such/dir", "--out", "{tmp}/m.pt"],
            1,
            "Error: data path /no/such/dir does not exist",
        ),
        (
            ["train", "--out", "{tmp}/a-file/sub/m.pt"],
            1,
            "Error: cannot write {tmp}/a-file/sub/m.pt: cannot create folder {tmp}/a-file/sub "
            "(Not a directory)",
        ),
        (
            ["train", "--data", "{tmp}/dl", "--out", "{tmp}/m.pt", "--device", "cuda:7"],
            1,
            "Error: --device cuda:7: CUDA is not available on this machine",
        ),
        (
            ["info", "--model", "{tmp}/missing.pt"],
            1,
            "Error: checkpoint {tmp}/missing.pt does not exist",
        ),
        (
            ["project", "--model", "{ckpt}", "--layer", "3", "--feature", "0"],
            2,
            "Error: Invalid value for --layer: layer 3 is out of range: "
            "this network has layers 1..2 (see 'deconvviz layers')",
        ),
        (
            ["project", "--model", "{ckpt}", "--layer", "1", "--feature", "32"],
            2,
            "Error: Invalid value for --feature: feature 32 is out of range: "
            "layer 1 has features 0..31 (see 'deconvviz layers')",
        ),
        (
            ["project", "--model", "{ckpt}", "--layer", "1", "--feature", "0", "--index", "5000"],
            2,
            "Error: Invalid value for --index: index 5000 is out of range: builtin:test has images "
            "0..1999",
        ),
    ],
)
def test_errors_are_one_line(tmp_path, tiny_checkpoint, args, code, msg):
    if torch.cuda.is_available() and "cuda:7" in args:
        pytest.skip("this machine has CUDA")
    (tmp_path / "a-file").write_text("not a folder")
    args = [a.format(tmp=tmp_path, ckpt=tiny_checkpoint) for a in args]
    r = run(*args)
    assert r.exit_code == code, r.output
    assert msg.format(tmp=tmp_path) in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "m.pt").exists()


def test_layers_lists_every_conv(tiny_checkpoint):
    r = run("layers", "--model", tiny_checkpoint)
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[1].split()[:4] == ["1", "features.0", "32", "16x16"]
    assert lines[2].split()[:4] == ["2", "features.3", "64", "8x8"]


def test_project_default_images_and_outputs(tmp_path, tiny_checkpoint):
    r = run(
        "project", "--model", tiny_checkpoint, "--layer", "2", "--feature", "9", "--out", tmp_path
    )
    assert r.exit_code == 0, r.output
    png = tmp_path / "layer2_feature9_max_deconvnet_switches.png"
    h5 = tmp_path / "layer2_feature9_max_deconvnet_switches.h5"
    assert f"wrote {png}" in r.output and f"wrote {h5}" in r.output
    assert Image.open(png).size[0] > 300
    got = read_projection_h5(h5)
    assert got["projection"].shape == (9, 3, 32, 32) and got["projection"].dtype == np.float32
    assert got["attrs"]["format_version"] == 1 and got["attrs"]["layer"] == 2
    # The 9 strongest images, strongest first, and their projections recomputed independently.
    model = load_model(tiny_checkpoint)
    src = resolve_source("builtin")
    x = normalize(src.read(0, len(src)), [0.5] * 3, [0.25] * 3)
    with torch.no_grad():
        acts = model.features(x)[:, 9].flatten(1).amax(1)
    order = sorted(range(len(acts)), key=lambda i: (-float(acts[i]), i))[:9]
    assert got["image_index"].tolist() == order
    assert np.allclose(got["activation"], acts[order].numpy())
    want = deconvolve(model, x[order], 2, 9).projections.numpy()
    assert np.array_equal(got["projection"], want)
    assert np.array_equal(got["image"], src.read_indices(order).numpy())


def test_project_image_files_with_notice_and_failure_keeps_old_results(tmp_path, tiny_checkpoint):
    img = tmp_path / "gray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8)).save(img)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main,
        [
            "project",
            "--model",
            str(tiny_checkpoint),
            "--layer",
            "1",
            "--feature",
            "3",
            "--image",
            str(img),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "converted 1 image(s) to RGB" in r.output or "resized" in r.output
    h5 = out / "layer1_feature3_max_deconvnet_switches.h5"
    before = h5.read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    r = run(
        "project",
        "--model",
        tiny_checkpoint,
        "--layer",
        "1",
        "--feature",
        "3",
        "--image",
        bad,
        "--out",
        out,
    )
    assert r.exit_code == 1 and r.output.startswith(f"Error: cannot read image {bad}")
    assert h5.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["layer1_feature3_max_deconvnet_switches.h5", "layer1_feature3_max_deconvnet_switches.png"]
    )


def test_project_feature_that_never_fires(tmp_path, tiny_checkpoint):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["state_dict"]["features.0.bias"][4] = -1e6
    dead = tmp_path / "dead.pt"
    torch.save(payload, dead)
    r = run(
        "project",
        "--model",
        dead,
        "--layer",
        "1",
        "--feature",
        "4",
        "--index",
        "0",
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 1
    assert r.output.strip() == (
        "Error: feature 4 of layer 1 does not fire on any of the 1 "
        "image(s) (all activations are 0); nothing to project"
    )
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_train_download_offline_is_one_line(tmp_path, offline):
    r = run("train", "--data", tmp_path / "cifar", "--download", "--out", tmp_path / "m.pt")
    assert r.exit_code == 1
    line = r.output.strip()
    assert line.startswith(f"Error: could not download CIFAR-10 into {tmp_path / 'cifar'} (")
    assert line.endswith("without internet access, point --data at an existing copy")
    assert "\n" not in line and not (tmp_path / "m.pt").exists()


def test_evaluate_with_no_options_says_which_data_to_give():
    r = run("evaluate")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "Error: builtin:test has other classes than the model (the model was trained on "
        "../shared/datasets/cifar10/train); give --data a source with the model's classes, e.g. "
        "a CIFAR-10 copy: --data ../shared/datasets/cifar10 or a cifar-10-batches-py folder"
    ]


def test_every_command_reads_the_test_split_by_default():
    for cmd in ("evaluate", "project", "report", "occlusion", "filters"):
        r = run(cmd, "--help")
        assert r.exit_code == 0
        flat = " ".join(r.output.split())
        assert (
            "--split [train|test] split to use where the source has several [default: test]" in flat
        ), (cmd, flat)


def test_render_redraws_a_projection_file(tmp_path):
    r = run("project", "--layer", "2", "--feature", "9", "--top", "3", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    stem = "layer2_feature9_max_deconvnet_switches"
    with h5py.File(tmp_path / "p" / f"{stem}.h5") as f:
        boxes = f["patch_box"][()]
        assert boxes.shape == (3, 4) and (boxes[:, 2:] - boxes[:, :2] <= 16).all()
    r = run("render", tmp_path / "p" / f"{stem}.h5", "--out", tmp_path / "again")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote {tmp_path / 'again' / (stem + '.png')}"
    assert (tmp_path / "again" / f"{stem}.png").read_bytes() == (
        tmp_path / "p" / f"{stem}.png"
    ).read_bytes()
    # A newer projection file is refused in one line.
    with h5py.File(tmp_path / "p" / f"{stem}.h5", "a") as f:
        f.attrs["format_version"] = 9
    r = run("render", tmp_path / "p" / f"{stem}.h5", "--out", tmp_path / "x")
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"Error: projection file {tmp_path / 'p' / (stem + '.h5')} has format version 9; this "
        "deconvviz reads versions 1..1"
    ]
