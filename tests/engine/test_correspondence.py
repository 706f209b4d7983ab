"""The correspondence measure (Zeiler & Fergus Table 1): literal Hamming distances,
masks, random boxes and bad boxes."""

from __future__ import annotations

import pytest
import torch

from deconvviz import DeconvvizError, load_model
from deconvviz.engine.correspondence import (
    check_boxes,
    correspondence,
    delta_score,
    fraction_box,
    mask_images,
    random_boxes,
    sign_hamming,
)


def test_a_hand_computed_delta():
    # signs: a = (+, -, 0, +), b = (+, +, 0, -), c = (0, -, 0, +)
    eps = torch.tensor([[1.0, -2.0, 0.0, 3.0], [1.0, 2.0, 0.0, -1.0], [0.0, -5.0, 0.0, 4.0]])
    # H(a, b) = 2 (features 1, 3); H(a, c) = 1 (feature 0); H(b, c) = 3 (features 0, 1, 3)
    assert sign_hamming(eps).tolist() == [[0, 2, 1], [2, 0, 3], [1, 3, 0]]
    score = delta_score(eps)
    assert score.total == 12  # ordered pairs i != j: 2 * (2 + 1 + 3)
    assert score.mean == pytest.approx(0.5)  # (2 + 1 + 3) / 3 pairs / 4 features
    assert score.std == pytest.approx(((0.25**2 * 2) / 3) ** 0.5)  # of 0.5, 0.25, 0.75
    assert score.dims == 4


def test_identical_changes_give_zero():
    eps = torch.tensor([[0.5, -1.0, 0.0]]).repeat(4, 1)
    score = delta_score(eps * torch.tensor([[1.0], [2.0], [0.1], [7.0]]))  # same signs
    assert score.total == 0 and score.mean == 0.0


def test_identical_images_and_boxes_give_zero_at_every_layer(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).repeat(3, 1, 1, 1)
    res = correspondence(model, x, [[4, 4, 12, 12]] * 3)
    assert [fl.describe() for fl in res.layers] == ["layer 1", "layer 2", "classifier input"]
    for fl in res.layers:
        assert res.scores[fl].total == 0 and res.scores[fl].mean == 0.0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_differences_against_a_direct_computation(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    boxes = [[0, 0, 8, 8], [10, 4, 20, 30], [24, 24, 32, 32]]
    res = correspondence(model, x, boxes, layers=[2, "classifier"])
    grey = (0.5 - 0.5) / 0.25  # the tiny model's normalisation
    masked = x.clone()
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        masked[i, :, y0:y1, x0:x1] = grey
    with torch.no_grad():
        l2 = lambda t: model.features(t).flatten(1).double()  # noqa: E731
        fc = lambda t: model.classifier[:-1](model.features(t)).double()  # noqa: E731
        for fl, f in zip(res.layers, (l2, fc)):
            eps = f(x) - f(masked)
            torch.testing.assert_close(res.eps[fl], eps, rtol=1e-5, atol=1e-6)
            s = torch.sign(eps)
            ham = [[int((s[i] != s[j]).sum()) for j in range(3)] for i in range(3)]
            assert res.scores[fl].hamming.tolist() == ham
            assert res.scores[fl].total == sum(map(sum, ham))


def test_masks_and_random_boxes():
    x = torch.zeros(2, 3, 6, 6)
    before = x.clone()
    fill = torch.tensor([1.0, 2.0, 3.0])
    out = mask_images(x, [[0, 1, 2, 4], [5, 0, 6, 6]], fill)
    assert torch.equal(x, before)
    assert torch.equal(out[0, :, 0:2, 1:4], fill.view(3, 1, 1).expand(3, 2, 3))
    assert int((out[0] != 0).sum()) == 3 * 2 * 3 and int((out[1] != 0).sum()) == 3 * 1 * 6
    g = torch.Generator().manual_seed(5)
    moved = random_boxes([[0, 0, 3, 2]] * 50, (6, 6), g)
    assert torch.all(moved[:, 2] - moved[:, 0] == 3) and torch.all(moved[:, 3] - moved[:, 1] == 2)
    assert (
        torch.all(moved[:, :2] >= 0) and torch.all(moved[:, 2] <= 6) and torch.all(moved[:, 3] <= 6)
    )
    assert len({tuple(b) for b in moved.tolist()}) > 5  # really placed at random
    again = random_boxes([[0, 0, 3, 2]] * 50, (6, 6), torch.Generator().manual_seed(5))
    assert torch.equal(moved, again)  # seeded
    assert fraction_box((0.0, 0.3125, 0.375, 0.6875), (32, 32)) == (0, 10, 12, 22)


@pytest.mark.parametrize(
    "box,message",
    [
        ([4, 4, 4, 9], r"^mask box 0 \(4, 4, 4, 9\) is empty"),
        ([9, 0, 4, 8], r"^mask box 0 \(9, 0, 4, 8\) is inverted"),
        ([0, 0, 40, 8], r"^mask box 0 \(0, 0, 40, 8\) leaves the 32x32 image"),
        ([-1, 0, 4, 8], r"leaves the 32x32 image"),
        ([0, 0, 4], r"must be \(y0, x0, y1, x1\)"),
        ([0.5, 0, 4, 8], r"whole pixels"),
    ],
)
def test_bad_boxes_are_one_line(tiny_checkpoint, box, message):
    model = load_model(tiny_checkpoint)
    with pytest.raises(DeconvvizError, match=message) as info:
        correspondence(model, torch.zeros(1, 3, 32, 32), [box])
    assert "\n" not in str(info.value)


def test_one_box_per_image():
    with pytest.raises(DeconvvizError, match="2 mask boxes for 3 images"):
        check_boxes([[0, 0, 1, 1]] * 2, 3, (8, 8))
