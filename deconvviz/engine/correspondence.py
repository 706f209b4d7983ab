"""Correspondence of object parts across images (Zeiler & Fergus, arXiv 1311.2901,
section 5.1, Table 1 and Figure 8).

The same part (say the left eye) is masked in n images; at a layer ``l`` the
change of each image's feature vector is ``eps_i = x_i - x~_i`` (original minus
masked, :mod:`.features`). If the network ties that part to the same features in
every image, the changes move the same way, and the signs of ``eps_i`` agree.
The paper's score is

    Delta_l = sum over i != j of H(sign eps_i, sign eps_j)

with ``H`` the Hamming distance. Here ``sign`` takes the values -1, 0, +1 (0
where masking left a feature unchanged, common after a ReLU) and ``H`` counts the
positions where two sign vectors differ. :class:`DeltaScore` gives both

* ``total``: that sum taken literally, over **ordered** pairs ``(i, j), i != j``
  (each unordered pair counts twice), as a count of positions; and
* ``mean``: the mean over the ``n (n - 1) / 2`` **unordered** pairs of the
  Hamming distance **normalised by the vector length** ``D`` (the fraction of
  features whose sign differs). The paper's Table 1 values (0.067 to 0.107 at
  layers 5 and 7) are on this scale, so ``mean`` is the number to compare with it;
  ``std`` is the standard deviation of that fraction over the pairs.

Lower is more consistent. The control masks a box of the same size at a random
place in each image (:func:`random_boxes`). Boxes are ``(y0, x0, y1, x1)`` in
pixels, end exclusive (the report's ``patch_box`` convention), and must lie
inside the image; masked pixels take the occlusion experiment's fill
(:func:`~deconvviz.engine.occlusion.fill_value`, mid-grey by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import DeconvvizError
from .features import FeatureLayer, LayerSpec, extract_features, resolve_feature_layers
from .occlusion import fill_value

__all__ = [
    "check_boxes",
    "fraction_box",
    "mask_images",
    "random_boxes",
    "sign_hamming",
    "DeltaScore",
    "delta_score",
    "Correspondence",
    "correspondence",
]


def check_boxes(boxes, count: int, image_size: Tuple[int, int]) -> torch.Tensor:
    """``count`` boxes ``(y0, x0, y1, x1)`` as an int64 ``(count, 4)`` tensor, after
    checking each is non-empty, not inverted and inside an image of ``image_size``."""
    h, w = int(image_size[0]), int(image_size[1])
    try:
        t = torch.as_tensor(boxes, dtype=torch.float64)
    except (TypeError, ValueError):
        raise DeconvvizError(
            f"mask boxes must be numbers (y0, x0, y1, x1); got {boxes!r}"
        ) from None
    if t.ndim == 1:
        t = t.view(1, -1)
    if t.ndim != 2 or t.shape[1] != 4:
        raise DeconvvizError(
            f"mask boxes must be (y0, x0, y1, x1) each; got shape {tuple(t.shape)}"
        )
    if t.shape[0] != count:
        raise DeconvvizError(f"{t.shape[0]} mask boxes for {count} images")
    if not bool(torch.equal(t, t.round())):
        raise DeconvvizError("mask box corners must be whole pixels")
    t = t.long()
    for i, (y0, x0, y1, x1) in enumerate(t.tolist()):
        box = f"mask box {i} ({y0}, {x0}, {y1}, {x1})"
        if y1 <= y0 or x1 <= x0:
            what = "empty" if (y1 == y0 or x1 == x0) else "inverted"
            raise DeconvvizError(
                f"{box} is {what}: need y0 < y1 and x0 < x1 (y0, x0, y1, x1, end exclusive)"
            )
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            raise DeconvvizError(
                f"{box} leaves the {h}x{w} image: rows must lie in 0..{h}, columns in 0..{w}"
            )
    return t


def fraction_box(fractions: Sequence[float], image_size: Tuple[int, int]) -> Tuple[int, ...]:
    """A box given as fractions of the image ``(fy0, fx0, fy1, fx1)`` in pixels, rounded."""
    h, w = int(image_size[0]), int(image_size[1])
    fy0, fx0, fy1, fx1 = (float(v) for v in fractions)
    return (round(fy0 * h), round(fx0 * w), round(fy1 * h), round(fx1 * w))


def mask_images(images: torch.Tensor, boxes, fill: torch.Tensor) -> torch.Tensor:
    """Copies of ``images`` ``(B, C, H, W)`` with box ``boxes[i]`` of image ``i`` set to
    ``fill`` ``(C,)``; ``images`` is not modified."""
    b, c, h, w = images.shape
    boxes = check_boxes(boxes, b, (h, w))
    fill = torch.as_tensor(fill).reshape(-1)
    if fill.numel() != c:
        raise DeconvvizError(f"the fill has {fill.numel()} channels, the images {c}")
    out = images.clone()
    for i, (y0, x0, y1, x1) in enumerate(boxes.tolist()):
        out[i, :, y0:y1, x0:x1] = fill.to(out.dtype).to(out.device).view(c, 1, 1)
    return out


def random_boxes(boxes, image_size: Tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """The control: each box moved to a place drawn uniformly (from ``generator``)
    among the positions where a box of its size fits the image. ``(n, 4)`` int64."""
    boxes = torch.as_tensor(boxes, dtype=torch.int64).view(-1, 4)
    boxes = check_boxes(boxes, boxes.shape[0], image_size)
    h, w = int(image_size[0]), int(image_size[1])
    out = []
    for y0, x0, y1, x1 in boxes.tolist():
        bh, bw = y1 - y0, x1 - x0
        ny = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
        nx = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
        out.append((ny, nx, ny + bh, nx + bw))
    return torch.tensor(out, dtype=torch.int64).view(-1, 4)


def sign_hamming(eps: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` int64: for vectors ``eps`` ``(n, D)``, the number of positions where
    ``sign(eps_i)`` and ``sign(eps_j)`` (each -1, 0 or +1) differ."""
    s = torch.sign(eps.reshape(eps.shape[0], -1))
    n = s.shape[0]
    out = torch.zeros((n, n), dtype=torch.int64)
    for i in range(n):
        out[i] = (s != s[i]).sum(dim=1)
    return out


@dataclass
class DeltaScore:
    """The paper's Delta of n difference vectors of length ``dims``.

    ``hamming`` ``(n, n)`` int64 pairwise counts; ``total`` the sum over ordered
    pairs ``i != j`` (the formula as printed); ``mean`` and ``std`` the mean and
    standard deviation over unordered pairs of ``hamming / dims`` (the scale of the
    paper's Table 1; NaN for fewer than 2 images).
    """

    hamming: torch.Tensor
    total: int
    mean: float
    std: float
    dims: int


def delta_score(eps: torch.Tensor) -> DeltaScore:
    """:class:`DeltaScore` of difference vectors ``eps`` ``(n, D)`` (n images)."""
    eps = eps.reshape(eps.shape[0], -1)
    n, dims = eps.shape
    ham = sign_hamming(eps)
    iu = torch.triu_indices(n, n, offset=1)
    frac = ham[iu[0], iu[1]].double() / max(dims, 1)
    mean = float(frac.mean()) if frac.numel() else float("nan")
    std = float(frac.std(unbiased=False)) if frac.numel() else float("nan")
    return DeltaScore(hamming=ham, total=int(ham.sum()), mean=mean, std=std, dims=int(dims))


@dataclass
class Correspondence:
    """Delta at each of ``layers`` for n images masked at ``boxes`` ``(n, 4)``:
    ``scores[layer]`` is a :class:`DeltaScore`; ``eps[layer]`` the ``(n, D)``
    float64 differences original minus masked."""

    layers: List[FeatureLayer]
    boxes: torch.Tensor
    scores: Dict[FeatureLayer, DeltaScore]
    eps: Dict[FeatureLayer, torch.Tensor]


def correspondence(
    model: nn.Module,
    images: torch.Tensor,
    boxes,
    layers: Sequence[LayerSpec] = (1, 2, "classifier"),
    fill: Union[str, float] = "grey",
    batch_size: int = 256,
) -> Correspondence:
    """Zeiler & Fergus Table 1 for normalised images ``(n, C, H, W)`` with one mask
    box per image (``(n, 4)``, ``(y0, x0, y1, x1)`` end exclusive).

    ``layers``: conv layer numbers and/or ``"classifier"``; ``fill`` as in
    :func:`~deconvviz.engine.occlusion.fill_value`, in the model's normalisation.
    The originals and the masked copies go through the model in one pass per batch;
    the model is left as found. Returns a :class:`Correspondence`.
    """
    if images.ndim != 4 or images.shape[0] < 1:
        raise DeconvvizError(
            f"images must be (n, C, H, W) with n >= 1; got shape {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    boxes = check_boxes(boxes, n, (h, w))
    feature_layers = resolve_feature_layers(model, layers, (h, w))
    norm = (getattr(model, "meta", None) or {}).get("normalization") or {
        "mean": [0.0] * c,
        "std": [1.0] * c,
    }
    masked = mask_images(images, boxes, fill_value(fill, norm["mean"], norm["std"]))
    feats, _ = extract_features(
        model, torch.cat([images, masked]), feature_layers, batch_size=batch_size
    )
    eps = {fl: feats[fl][:n] - feats[fl][n:] for fl in feature_layers}
    return Correspondence(
        layers=feature_layers,
        boxes=boxes,
        scores={fl: delta_score(e) for fl, e in eps.items()},
        eps=eps,
    )
