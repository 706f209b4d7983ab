"""The paper's feature-scale clipping: conv filters above the RMS radius are rescaled to it."""

from __future__ import annotations

import pytest
import torch

from deconvviz import DeconvvizError
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.source import ImageSource
from deconvviz.models.architectures import CifarCNN
from deconvviz.models.constraints import clip_filter_rms, filter_rms
from deconvviz.models.train import TrainConfig, channel_stats, train_model


def test_clip_rescales_only_the_filters_above_the_radius():
    torch.manual_seed(0)
    model = CifarCNN(hidden=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    radius = float(filter_rms(model.features[0].weight).median())
    clipped = clip_filter_rms(model, radius)
    for name, conv in (("features.0", model.features[0]), ("features.3", model.features[3])):
        old = before[f"{name}.weight"]
        old_rms = filter_rms(old)
        scale = torch.where(old_rms > radius, radius / old_rms, torch.ones_like(old_rms))
        torch.testing.assert_close(
            conv.weight.detach().double(), old.double() * scale.view(-1, 1, 1, 1), rtol=1e-6, atol=0
        )
        assert torch.equal(conv.bias, before[f"{name}.bias"])
    assert clipped == int((filter_rms(before["features.0.weight"]) > radius).sum()) + int(
        (filter_rms(before["features.3.weight"]) > radius).sum()
    )
    assert torch.equal(model.classifier[1].weight, before["classifier.1.weight"])  # not a conv
    with pytest.raises(DeconvvizError, match="must be positive"):
        clip_filter_rms(model, 0)


def test_clip_holds_after_one_training_step():
    images, labels = synthetic_images(32, seed=0)
    src = ImageSource(
        description="small",
        kind="builtin",
        split="train",
        labels=labels,
        class_names=[str(i) for i in range(10)],
        images=images,
    )
    mean, std = channel_stats(src)
    radius = 0.0205  # above every layer-1 filter after the step, amid the layer-2 ones

    def one_step(clip):
        torch.manual_seed(0)
        model = CifarCNN(hidden=16)
        cfg = TrainConfig(
            epochs=1,
            batch_size=32,
            lr=0.5,
            seed=0,
            augment=False,
            warmup_epochs=0,
            clip_filter_rms=clip,
        )
        train_model(model, src, mean, std, cfg, progress=False, log=lambda s: None)
        return model

    free, held = one_step(None), one_step(radius)
    for i in (0, 3):
        w_free, w_held = free.features[i].weight.detach(), held.features[i].weight.detach()
        rms_free = filter_rms(w_free)
        assert bool((rms_free > radius).any())  # the step really broke the radius
        assert i == 0 or bool((rms_free <= radius).any())  # and layer 2 keeps some filters
        assert float(filter_rms(w_held).max()) <= radius * (1 + 1e-6)
        scale = torch.where(rms_free > radius, radius / rms_free, torch.ones_like(rms_free))
        torch.testing.assert_close(
            w_held.double(), w_free.double() * scale.view(-1, 1, 1, 1), rtol=1e-5, atol=1e-8
        )
