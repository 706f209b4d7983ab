"""Preprocessing that comes with a model: resize the shorter side, centre-crop.

This is the geometric half of torchvision's ``ImageClassification`` transform
(``weights.transforms()``) applied to a PIL image: resize so the shorter side is
``resize_size`` (PIL, antialiased, bilinear unless the weights say otherwise),
then cut the centred ``H x W`` window. The result is kept as ``uint8``
``(3, H, W)`` pixels so decoded folders can be cached; normalisation with the
model's mean and std happens later, batch by batch
(:func:`deconvviz.data.source.normalize`).

Large JPEGs are decoded at reduced scale (PIL ``Image.draft``: the JPEG decoder
skips the finest DCT coefficients, 1/2, 1/4 or 1/8 of the size) whenever the
image is at least twice the size the resize wants; the antialiased resize that
follows then shrinks by at least 2x, so the pixels stay within a few levels of a
full decode (``draft=False`` gives torchvision's pixels exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DeconvvizError

__all__ = [
    "Preprocessing",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "default_resize_size",
    "resized_shape",
    "center_crop_box",
    "resize_center_crop",
    "decode_image",
    "preprocess_image",
    "image_size_pair",
    "check_resize",
    "DRAFT_GAP",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's InterpolationMode values -> PIL resampling filters (as torchvision maps them)
INTERPOLATIONS = {
    "nearest": 0,
    "nearest-exact": 0,
    "bilinear": 2,
    "bicubic": 3,
    "box": 4,
    "hamming": 5,
    "lanczos": 1,
}
#: Shrink by at least this factor after a reduced-scale JPEG decode (as PIL's thumbnail
#: does); part of the decode cache's key.
DRAFT_GAP = 2

Size = Union[int, Sequence[int]]


def image_size_pair(size: Size) -> Tuple[int, int]:
    """An image size (one number or ``H, W``) as a positive ``(H, W)`` pair."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        vals = [int(v) for v in size]
        if len(vals) == 1:
            vals = vals * 2
        if len(vals) != 2:
            raise DeconvvizError(f"image size must be one number or H,W; got {list(size)}")
        h, w = vals
    if h < 1 or w < 1:
        raise DeconvvizError(f"image size must be positive, got {h}x{w}")
    return h, w


def default_resize_size(size: Size, ref_resize: int = 256, ref_crop: int = 224) -> int:
    """Shorter side to resize to before cropping ``size``: torchvision's 256-for-224
    (or the weights' own ``ref_resize``-for-``ref_crop``) scaled to ``size``.

    ``default_resize_size(224) == 256``, ``default_resize_size(64) == 73``.
    """
    h, w = image_size_pair(size)
    return max(h, w) * int(ref_resize) // int(ref_crop)


def resized_shape(height: int, width: int, resize_size: int) -> Tuple[int, int]:
    """``(h, w)`` after resizing the shorter side of a ``height x width`` image to
    ``resize_size``, the longer side in proportion and rounded down (torchvision's rule)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(resize_size), int(int(resize_size) * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> Tuple[int, int]:
    """``(top, left)`` of the centred ``crop_h x crop_w`` window (torchvision's rounding)."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its pixels.

    ``size``: the input ``(H, W)``; ``resize_size``: the shorter side before the
    centre crop (``>= max(H, W)``); ``interpolation``: a key of
    :data:`INTERPOLATIONS`; ``mean``/``std``: per-channel statistics for
    :func:`~deconvviz.data.source.normalize`.
    """

    size: Tuple[int, int]
    resize_size: int
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self):
        object.__setattr__(self, "size", image_size_pair(self.size))
        object.__setattr__(self, "resize_size", int(self.resize_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        check_resize(self.size, self.resize_size, self.interpolation)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise DeconvvizError(
                f"mean and std need 3 values (R, G, B); got {len(self.mean)} and {len(self.std)}"
            )
        if any(not v > 0 for v in self.std):
            raise DeconvvizError(f"std values must be positive, got {list(self.std)}")

    @classmethod
    def from_meta(cls, meta: dict) -> "Preprocessing":
        """From a model's ``meta`` (``input_size``, ``normalization`` and, where present,
        ``resize_size`` and ``interpolation``). Checkpoints carry no ``resize_size``: their
        images are resized so the shorter side fits the input, then centre-cropped."""
        size = tuple(int(v) for v in meta.get("input_size", (3, 32, 32))[-2:])
        norm = meta.get("normalization") or {"mean": (0.0,) * 3, "std": (1.0,) * 3}
        return cls(
            size=size,
            resize_size=int(meta.get("resize_size") or max(size)),
            mean=norm["mean"],
            std=norm["std"],
            interpolation=str(meta.get("interpolation", "bilinear")),
        )

    def source_kwargs(self) -> dict:
        """Keyword arguments for :func:`~deconvviz.data.resolve.resolve_source`."""
        return {
            "image_size": self.size,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
        }

    def describe(self) -> str:
        return (
            f"resize shorter side to {self.resize_size} ({self.interpolation}), centre crop "
            f"{self.size[0]}x{self.size[1]}, mean {list(self.mean)}, std {list(self.std)}"
        )


def check_resize(size: Tuple[int, int], resize_size: int, interpolation: str) -> None:
    """Refuse (one line) an unknown interpolation or a resize smaller than the crop."""
    if interpolation not in INTERPOLATIONS:
        raise DeconvvizError(
            f"unknown interpolation {interpolation!r} (known: {', '.join(INTERPOLATIONS)})"
        )
    if resize_size < max(size):
        raise DeconvvizError(
            f"resize size {resize_size} is smaller than the crop "
            f"{size[0]}x{size[1]}; it must be at least {max(size)}"
        )


def resize_center_crop(
    image, size: Size, resize_size: Optional[int] = None, interpolation: str = "bilinear"
):
    """Resize a PIL image's shorter side to ``resize_size`` and cut the centred
    ``size`` window: a PIL image of ``size``.

    ``resize_size`` defaults to ``max(size)`` (the shorter side just fits). The
    same pixels as torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)`` on
    the PIL image (PIL resampling, always antialiased).
    """
    h, w = image_size_pair(size)
    resize_size = max(h, w) if resize_size is None else int(resize_size)
    check_resize((h, w), resize_size, interpolation)
    ow, oh = image.size
    return _resize_crop(image, (oh, ow), (h, w), resize_size, interpolation)


def _resize_crop(
    image,
    original: Tuple[int, int],
    size: Tuple[int, int],
    resize_size: int,
    interpolation: str,
    box=None,
):
    """``original``: ``(h, w)`` of the picture before any reduced-scale decode; ``box``:
    the region of ``image`` that stands for it (``Image.draft``'s second value)."""
    from PIL import Image

    (oh, ow), (h, w) = original, size
    if (oh, ow) == (h, w) and box is None:
        return image
    nh, nw = resized_shape(oh, ow, resize_size)
    if (nh, nw) != (oh, ow) or box is not None:
        image = image.resize(
            (nw, nh), resample=Image.Resampling(INTERPOLATIONS[interpolation]), box=box
        )
    top, left = center_crop_box(nh, nw, h, w)
    return image.crop((left, top, left + w, top + h))


def decode_image(
    path,
    size: Size,
    resize_size: Optional[int] = None,
    interpolation: str = "bilinear",
    draft: bool = True,
) -> Tuple[np.ndarray, dict]:
    """Read an image file as ``uint8`` ``(3, H, W)`` at the model's input ``size``.

    Converted to RGB (as torchvision's ``ImageFolder`` loader does) and, where its
    size differs from ``size``, resized and centre-cropped by
    :func:`resize_center_crop`. With ``draft`` a JPEG at least twice the resize
    target is decoded at reduced scale first (much faster for photographs; pixels
    within a few levels of a full decode). Returns ``(pixels, {"converted": bool,
    "resized": bool, "upscaled": bool})``. A file that cannot be read raises a
    one-line :class:`DeconvvizError` naming it.
    """
    from PIL import Image

    h, w = image_size_pair(size)
    resize_size = max(h, w) if resize_size is None else int(resize_size)
    check_resize((h, w), resize_size, interpolation)
    info = {"converted": False, "resized": False, "upscaled": False, "transparent": False}
    try:
        with Image.open(path) as im:
            ow, oh = im.size
            box = None
            if (oh, ow) != (h, w):
                info["resized"] = True
                nh, nw = resized_shape(oh, ow, resize_size)
                info["upscaled"] = nh > oh or nw > ow
                if draft and im.format == "JPEG" and min(ow // nw, oh // nh) >= DRAFT_GAP:
                    got = im.draft(None, (nw * DRAFT_GAP, nh * DRAFT_GAP))
                    if got is not None and im.size != (ow, oh):
                        box = got[1]
            if im.mode != "RGB":
                info["converted"] = True
                if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                    # Transparent pixels become mid-grey, the projections' zero, not black.
                    info["transparent"] = True
                    rgba = im.convert("RGBA")
                    im = Image.new("RGB", rgba.size, (128, 128, 128))
                    im.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    im = im.convert("RGB")
            else:
                im.load()
            if info["resized"]:
                im = _resize_crop(im, (oh, ow), (h, w), resize_size, interpolation, box=box)
            arr = np.asarray(im, dtype=np.uint8)
    except DeconvvizError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeconvvizError(f"cannot read image {path}: {reason}") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), info


def preprocess_image(image, preprocessing: Preprocessing) -> torch.Tensor:
    """A PIL image (any mode, any size) -> ``uint8`` ``(3, H, W)`` for the model."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    out = resize_center_crop(
        rgb, preprocessing.size, preprocessing.resize_size, preprocessing.interpolation
    )
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy())
