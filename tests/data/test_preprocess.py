"""Preprocessing that comes with a model: resize the shorter side, centre-crop,
checked pixel for pixel against torchvision's own transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models import ResNet18_Weights
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

import deconvviz.data.folders as data_mod
from deconvviz import DeconvvizError
from deconvviz.data.preprocess import (
    Preprocessing,
    center_crop_box,
    decode_image,
    default_resize_size,
    preprocess_image,
    resized_shape,
)
from deconvviz.data.resolve import resolve_source
from deconvviz.data.source import normalize

SHARED_IMAGENET = (
    Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "imagenet-samples"
)
PHOTOS = {  # name: what it exercises
    "n01440764_tench.JPEG": "a typical 500x375 landscape",
    "n01748264_Indian_cobra.JPEG": "220x530 portrait, shorter than 256: upscaled",
    "n02096051_Airedale.JPEG": "a greyscale (L) JPEG",
    "n02091032_Italian_greyhound.JPEG": "2400x1600: decoded at reduced scale with draft",
}
needs_imagenet = pytest.mark.skipif(
    not SHARED_IMAGENET.is_dir(),
    reason=f"the ImageNet samples at {SHARED_IMAGENET} are not here "
    "(they sit beside the repo in CI)",
)


def _torchvision_pixels(path, resize, crop):
    """torchvision's Resize + CenterCrop on the PIL image, as ImageFolder loads it."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return pil_to_tensor(T.CenterCrop(crop)(T.Resize(resize)(rgb)))


def test_geometry_is_torchvisions():
    assert default_resize_size(224) == 256 and default_resize_size(64) == 73
    assert default_resize_size(112, 232, 224) == 116
    assert resized_shape(375, 500, 256) == (256, 341)
    assert resized_shape(500, 375, 256) == (341, 256)
    assert resized_shape(224, 224, 256) == (256, 256)
    assert center_crop_box(256, 341, 224, 224) == (16, 58)  # round(58.5) -> 58 (banker's)
    assert center_crop_box(341, 256, 224, 224) == (58, 16)


@needs_imagenet
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_real_photos_equal_the_weights_transforms(name):
    path = SHARED_IMAGENET / name
    transform = ResNet18_Weights.DEFAULT.transforms()  # resize 256, crop 224, bilinear
    pixels, info = decode_image(path, 224, 256, draft=False)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.uint8 and info["resized"]
    with Image.open(path) as im:
        expected = transform(im.convert("RGB"))
    ours = normalize(torch.from_numpy(pixels)[None], transform.mean, transform.std)[0]
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0)
    # At 64 px (resize 73) the same holds against Resize + CenterCrop on the PIL image.
    small, _ = decode_image(path, 64, 73, draft=False)
    assert torch.equal(torch.from_numpy(small), _torchvision_pixels(path, 73, 64))


@needs_imagenet
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_tensor_resize_differs_by_at_most_one_level(name):
    """torchvision's tensor path (v2 on uint8, antialias=True) uses its own antialiased
    kernel rather than PIL's: within one grey level of ours."""
    path = SHARED_IMAGENET / name
    with Image.open(path) as im:
        tensor = pil_to_tensor(im.convert("RGB"))
    theirs = v2.CenterCrop(224)(v2.Resize(256, antialias=True)(tensor))
    ours, _ = decode_image(path, 224, 256, draft=False)
    assert (torch.from_numpy(ours).int() - theirs.int()).abs().max() <= 1


@needs_imagenet
def test_draft_decodes_large_jpegs_at_reduced_scale_close_to_full():
    big = SHARED_IMAGENET / "n02091032_Italian_greyhound.JPEG"  # 2400x1600
    full, _ = decode_image(big, 224, 256, draft=False)
    drafted, _ = decode_image(big, 224, 256, draft=True)
    diff = np.abs(full.astype(int) - drafted.astype(int))
    assert diff.max() > 0 and diff.mean() < 1.0  # another path, same picture
    normal = SHARED_IMAGENET / "n01440764_tench.JPEG"  # 500x375: < 2x of 256
    assert np.array_equal(
        decode_image(normal, 224, 256, draft=True)[0],
        decode_image(normal, 224, 256, draft=False)[0],
    )


def _photo_like(h, w, seed=0):
    """A smooth picture with some texture (JPEG-friendly, not noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in range(3)], -1)
    img = (base * 100 + 128 + rng.normal(0, 6, (h, w, 3))).clip(0, 255)
    return img.astype(np.uint8)


def test_synthetic_jpeg_exact_and_drafted(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(_photo_like(600, 800)).save(path, quality=90)
    exact, info = decode_image(path, 64, 73, draft=False)
    assert torch.equal(torch.from_numpy(exact), _torchvision_pixels(path, 73, 64))
    assert info == {"converted": False, "resized": True, "upscaled": False, "transparent": False}
    drafted, _ = decode_image(path, 64, 73, draft=True)
    diff = np.abs(exact.astype(int) - drafted.astype(int))
    assert diff.max() > 0 and diff.mean() < 1.0
    with Image.open(path) as im:
        pre = Preprocessing(size=64, resize_size=73)
        assert torch.equal(preprocess_image(im, pre), torch.from_numpy(exact))


def test_images_of_the_right_size_pass_untouched(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    pixels, info = decode_image(tmp_path / "a.png", 32)
    assert np.array_equal(pixels, arr.transpose(2, 0, 1)) and not info["resized"]


def test_folder_resized_and_cropped_for_the_model(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_photo_like(90, 120, 1)).save(folder / "a.png")
    Image.fromarray(_photo_like(150, 100, 2)[..., 0]).save(folder / "b.png")  # greyscale
    Image.fromarray(_photo_like(40, 50, 3)).save(folder / "c.png")  # smaller: upscaled
    src = resolve_source(str(folder), image_size=(64, 64), resize_size=73)
    assert src.shape == (3, 64, 64) and len(src) == 3
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        assert torch.equal(src.read(i, i + 1)[0], _torchvision_pixels(folder / name, 73, 64))
    err = capsys.readouterr().err
    assert "deconvviz: converted 1 image(s) to RGB" in err
    assert (
        "deconvviz: resized 3 image(s) to 64x64 (shorter side to 73, centre crop; 1 of them "
        "upscaled)"
    ) in err

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_mod, "_decode", no_decode)
    again = resolve_source(str(folder), image_size=(64, 64), resize_size=73)
    assert torch.equal(again.read(0, 3), src.read(0, 3))
    monkeypatch.undo()
    other = resolve_source(str(folder), image_size=(64, 64), resize_size=96)  # its own cache entry
    assert not torch.equal(other.read(0, 1), src.read(0, 1))
    assert torch.equal(other.read(0, 1)[0], _torchvision_pixels(folder / "a.png", 96, 64))


def test_preprocessing_from_meta_and_its_checks():
    ckpt = {"input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    pre = Preprocessing.from_meta(ckpt)
    assert pre.size == (32, 32) and pre.resize_size == 32 and pre.interpolation == "bilinear"
    assert pre.source_kwargs() == {
        "image_size": (32, 32),
        "resize_size": 32,
        "interpolation": "bilinear",
    }
    tv = dict(ckpt, input_size=[3, 224, 224], resize_size=232, interpolation="bicubic")
    assert Preprocessing.from_meta(tv).resize_size == 232
    for kwargs, message in [
        (
            {"size": 224, "resize_size": 200},
            "resize size 200 is smaller than the crop 224x224; it must be at least 224",
        ),
        (
            {"size": 64, "resize_size": 73, "interpolation": "cubic"},
            "unknown interpolation 'cubic' (known: nearest, ",
        ),
        (
            {"size": 64, "resize_size": 73, "std": [0.2, 0.0, 0.2]},
            "std values must be positive, got [0.2, 0.0, 0.2]",
        ),
        (
            {"size": 64, "resize_size": 73, "mean": [0.5]},
            "mean and std need 3 values (R, G, B); got 1 and 3",
        ),
        ({"size": (0, 64), "resize_size": 73}, "image size must be positive, got 0x64"),
    ]:
        with pytest.raises(DeconvvizError) as exc:
            Preprocessing(**kwargs)
        assert str(exc.value).startswith(message)
