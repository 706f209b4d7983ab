"""Filter RMS, sorting and features that never fire, against direct computations."""

from __future__ import annotations

import math

import numpy as np
import torch

from deconvviz import load_model
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.source import ImageSource, normalize
from deconvviz.engine.filters import dead_features, layer_filters
from deconvviz.models.constraints import filter_rms
from deconvviz.render.paper import filter_tiles


def test_filter_rms_against_a_loop():
    w = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    direct = [math.sqrt(sum(float(v) ** 2 for v in w[f].reshape(-1)) / 75) for f in range(4)]
    assert filter_rms(w).dtype == torch.float64 and filter_rms(w).shape == (4,)
    np.testing.assert_allclose(filter_rms(w).numpy(), direct, rtol=1e-12)


def test_layer_filters_sorted_by_rms(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    with torch.no_grad():
        model.features[0].weight[5] *= 100  # one dominating filter
        model.features[0].weight[9] = 0  # one empty filter
    found = layer_filters(model, 1)
    assert found.weight.shape == (32, 3, 5, 5) and found.path == "features.0"
    assert int(found.order[0]) == 5 and int(found.order[-1]) == 9
    rms = found.rms[found.order]
    assert torch.all(rms[:-1] >= rms[1:])
    tiles = filter_tiles(found.weight[found.order])
    assert tiles.shape == (32, 5, 5, 3) and tiles.min() >= 0 and tiles.max() <= 1
    assert np.all(tiles[-1] == 0.5)  # the zero filter is grey
    w = found.weight[5].numpy()  # scaled symmetrically around zero
    np.testing.assert_allclose(tiles[0], (0.5 + 0.5 * w / np.abs(w).max()).transpose(1, 2, 0))
    deep = filter_tiles(layer_filters(model, 2).weight)
    assert deep.shape == (64, 5, 5, 3) and np.all(deep[..., 0] == deep[..., 1])


def test_dead_features_against_a_direct_scan(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    with torch.no_grad():
        model.features[0].bias[3] = -1e6  # feature 3 can never fire
    images, labels = synthetic_images(30, seed=1)
    src = ImageSource(
        description="small",
        kind="builtin",
        split="test",
        labels=labels,
        class_names=[str(i) for i in range(10)],
        images=images,
    )
    dead = dead_features(model, src, 1, batch_size=7)
    with torch.no_grad():
        direct = model.features[:3](normalize(images, [0.5] * 3, [0.25] * 3)).amax(dim=(0, 2, 3))
    torch.testing.assert_close(dead.max_activation, direct)
    assert dead.dead.tolist() == torch.nonzero(direct <= 0).view(-1).tolist()
    assert 3 in dead.dead.tolist() and dead.num_images == 30
    assert dead_features(model, src, 1, limit=5).num_images == 5
