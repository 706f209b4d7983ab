"""The network, training, checkpoints and the bundled model."""

import pytest
import torch

from deconvviz import DeconvvizError, load_model
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.resolve import resolve_source
from deconvviz.data.source import ImageSource
from deconvviz.engine.net.layers import list_layers
from deconvviz.models.architectures import CifarCNN, build_model
from deconvviz.models.checkpoint import bundled_checkpoint, read_checkpoint, save_checkpoint
from deconvviz.models.train import TrainConfig, augment_batch, channel_stats, evaluate, train_model


def test_shapes_and_layers():
    m = CifarCNN()
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert [type(x).__name__ for x in m.features] == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
    ]
    l1, l2 = list_layers(m)
    assert (l1.features, l1.output_size, l1.rf_size) == (32, (16, 16), (6, 6))
    assert (l2.features, l2.output_size, l2.rf_size) == (64, (8, 8), (16, 16))
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet")


def test_augment_is_a_crop_and_flip_of_the_batch():
    imgs = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    out = augment_batch(imgs, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    # Each output row is a (possibly flipped, shifted, zero-filled) row of the input.
    g = torch.Generator().manual_seed(0)
    assert torch.equal(out, augment_batch(imgs, g, pad=2))


def _small_source(n=256):
    images, labels = synthetic_images(n, seed=0)
    return ImageSource(
        description="small",
        kind="builtin",
        split="train",
        labels=labels,
        class_names=[str(i) for i in range(10)],
        images=images,
    )


def test_a_few_steps_lower_the_loss_and_are_deterministic():
    src = _small_source()
    mean, std = channel_stats(src)
    cfg = TrainConfig(
        epochs=5,
        batch_size=32,
        lr=0.05,
        seed=0,
        augment=False,
        label_smoothing=0.0,
        warmup_epochs=0,
    )

    def run():
        torch.manual_seed(0)
        m = CifarCNN(hidden=32)
        before = evaluate(m, src, mean, std)["loss"]
        hist = train_model(m, src, mean, std, cfg, progress=False, log=lambda s: None)
        return m, before, hist

    m1, before, hist = run()
    after = evaluate(m1, src, mean, std)["loss"]
    assert after < before - 0.05
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    m2, _, _ = run()
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_round_trip_weights_only(tmp_path):
    torch.manual_seed(1)
    m = CifarCNN(hidden=16)
    p = save_checkpoint(
        tmp_path / "m.pt",
        m,
        arch="cifar_cnn",
        config={"hidden": 16},
        class_names=list("abcdefghij"),
        mean=[0.1, 0.2, 0.3],
        std=[0.4, 0.5, 0.6],
        epochs=2,
        test_accuracy=0.5,
    )
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "deconvviz-checkpoint" and raw["epochs"] == 2
    loaded = load_model(p)
    assert not loaded.training
    for a, b in zip(m.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.meta["normalization"]["std"] == [0.4, 0.5, 0.6]
    assert loaded.meta["class_names"] == list("abcdefghij")


def test_bad_checkpoints_are_clear(tmp_path, tiny_checkpoint):
    with pytest.raises(DeconvvizError, match=r"^checkpoint .*missing\.pt does not exist$"):
        load_model(tmp_path / "missing.pt")
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DeconvvizError,
        match=r"^\S*trunc\.pt is not a deconvviz checkpoint "
        r".*: it is damaged or truncated",
    ):
        load_model(tmp_path / "trunc.pt")
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["arch"] = "resnet50"
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(
        DeconvvizError,
        match=r"is for architecture 'resnet50', which this "
        r"deconvviz does not know",
    ):
        load_model(tmp_path / "other.pt")
    payload["arch"] = "cifar_cnn"
    payload["config"] = {"num_classes": 10, "hidden": 99}
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(DeconvvizError, match=r"does not fit architecture 'cifar_cnn'"):
        load_model(tmp_path / "mismatch.pt")
    torch.save({"hello": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(
        DeconvvizError,
        match=r"foreign\.pt is not a deconvviz checkpoint .*: it "
        r"holds a state dict \(tensors by parameter name\); give it to --weights",
    ):
        load_model(tmp_path / "foreign.pt")


def test_unwritable_checkpoint_leaves_nothing(tmp_path):
    with pytest.raises(DeconvvizError, match="folder .* does not exist"):
        save_checkpoint(
            tmp_path / "no" / "m.pt",
            CifarCNN(hidden=8),
            arch="cifar_cnn",
            config={},
            class_names=[],
            mean=[0] * 3,
            std=[1] * 3,
        )


@pytest.mark.skipif(not bundled_checkpoint().is_file(), reason="bundled checkpoint not built")
def test_bundled_model_metadata():
    meta = read_checkpoint(None)
    assert meta["arch"] == "cifar_cnn" and meta["test_accuracy"] >= 0.75
    assert meta["class_names"][5] == "dog"
    assert len(meta["train_data"]["fingerprint"]) == 64
    model = load_model()
    assert not model.training
    # On generated images the network still gives valid class probabilities.
    src = resolve_source("builtin")
    x = torch.randn(4, 3, 32, 32)
    p = model(x).softmax(1)
    assert torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)
    assert len(src) == 2000
