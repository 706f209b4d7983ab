"""Invariance of features to translation, scale and rotation (Zeiler & Fergus,
arXiv 1311.2901, section 5 and Figure 5).

Each image is transformed by a range of amounts; for every amount the measure is

* the **Euclidean distance** ``||f_l(T(x)) - f_l(x)||`` between the feature vectors
  (:mod:`.features`) of the original and the transformed image at each layer ``l``,
  **normalised per layer by the mean feature norm of the originals**,
  ``mean_i ||f_l(x_i)||`` over the images of the call, so that curves of layers with
  very different sizes and scales share one axis (a value of 1 is a change as large
  as a typical feature vector); the raw distances are kept too;
* the softmax **probability of the true class** (the label; for an unlabelled image,
  ``-1``, the class the network predicts for the original).

Transforms (:func:`transform_images`) act on normalised model input ``(B, C, H, W)``
about the image centre ``((H - 1) / 2, (W - 1) / 2)``, sampling bilinearly; pixels
whose source falls outside the image take the occlusion experiment's fill
(:func:`~deconvviz.engine.occlusion.fill_value`, mid-grey by default). Source
coordinates within 1e-6 pixel of a whole pixel are snapped to it, and rotation
angles are reduced modulo 360 degrees, so the identity amounts (translation 0,
scale 1, rotation 0 or 360) return the image exactly and whole-pixel translations
and quarter turns are exact shifts and ``rot90``\\s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import DeconvvizError
from .features import FeatureLayer, LayerSpec, extract_features, resolve_feature_layers
from .occlusion import fill_value

__all__ = [
    "TRANSFORMS",
    "IDENTITY",
    "UNITS",
    "transform_images",
    "amount_range",
    "InvarianceCurves",
    "invariance_curves",
]

TRANSFORMS = ("translate", "scale", "rotate")
IDENTITY = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
UNITS = {
    "translate": "vertical shift (pixels, + = down)",
    "scale": "scale factor",
    "rotate": "rotation (degrees, counter-clockwise)",
}
_SNAP = 1e-6


def _check_kind(kind: str) -> str:
    if kind not in TRANSFORMS:
        raise DeconvvizError(f"unknown transform {kind!r}; choose one of {', '.join(TRANSFORMS)}")
    return kind


def _check_amount(kind: str, amount: float) -> float:
    amount = float(amount)
    if not math.isfinite(amount):
        raise DeconvvizError(f"{kind} amount must be a finite number; got {amount}")
    if kind == "scale" and amount <= 0:
        raise DeconvvizError(f"scale factors must be positive; got {amount:g}")
    return amount


def _source_coordinates(kind: str, amount: float, h: int, w: int):
    """Where each output pixel ``(h, w)`` samples the input (float64 rows, columns)."""
    yy = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    xx = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    if kind == "translate":
        sy, sx = yy - amount, xx
    elif kind == "scale":
        sy, sx = cy + (yy - cy) / amount, cx + (xx - cx) / amount
    else:
        theta = math.radians(amount % 360.0)
        c, s = math.cos(theta), math.sin(theta)
        u, v = xx - cx, cy - yy  # x right, y up
        su, sv = c * u + s * v, -s * u + c * v  # R(-theta): content turns counter-clockwise
        sy, sx = cy - sv, cx + su
    snap = lambda t: torch.where((t - t.round()).abs() < _SNAP, t.round(), t)  # noqa: E731
    return snap(sy), snap(sx)


def transform_images(
    images: torch.Tensor, kind: str, amount: float, fill: torch.Tensor
) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` (normalised model input) transformed by ``amount``.

    ``kind``: ``"translate"`` (vertical shift in pixels, positive moves the content
    down), ``"scale"`` (factor about the centre, above 1 zooms in) or ``"rotate"``
    (degrees about the centre, counter-clockwise as displayed). ``fill`` ``(C,)``:
    the value of pixels whose source lies outside the image. Returns a new tensor of
    the same shape and dtype; ``images`` is not modified.
    """
    _check_kind(kind)
    amount = _check_amount(kind, amount)
    if images.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    fill = torch.as_tensor(fill, dtype=torch.float64).reshape(-1)
    if fill.numel() != c:
        raise DeconvvizError(f"the fill has {fill.numel()} channels, the images {c}")
    sy, sx = _source_coordinates(kind, amount, h, w)
    y0, x0 = sy.floor(), sx.floor()
    wy, wx = sy - y0, sx - x0
    flat = images.detach().to(torch.float64).reshape(b, c, h * w)
    fillv = fill.to(images.device).view(1, c, 1)
    out = torch.zeros_like(flat)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        weight = (wy if dy else 1 - wy) * (wx if dx else 1 - wx)
        if not bool((weight != 0).any()):
            continue  # whole-pixel sources: only the (0, 0) corner counts
        yi, xi = (y0 + dy).long(), (x0 + dx).long()
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)).reshape(-1).to(images.device)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(-1).to(images.device)
        values = torch.where(inside.view(1, 1, -1), flat[:, :, index], fillv)
        out = out + weight.reshape(1, 1, -1).to(images.device) * values
    return out.reshape(b, c, h, w).to(images.dtype)


def amount_range(text: Union[str, Sequence[float]], kind: str) -> List[float]:
    """Amounts of a transform from ``"START:STOP:STEP"`` (STOP included when the steps
    reach it), a comma list ``"0,90,180"`` or a sequence of numbers; a range with no
    points, a zero step or an amount the transform cannot take is a one-line error."""
    _check_kind(kind)
    if isinstance(text, str):
        spec = text.strip()
        try:
            parts = [float(p) for p in spec.split(":" if ":" in spec else ",") if p.strip()]
        except ValueError:
            parts = None
        if parts is None or (":" in spec and len(parts) != 3):
            raise DeconvvizError(
                f"{kind} range {text!r} is not START:STOP:STEP or a comma list of numbers"
            )
        if ":" in spec:
            start, stop, step = parts
            if step == 0 or not all(map(math.isfinite, parts)):
                raise DeconvvizError(
                    f"{kind} range {text!r} has no points (the step must be "
                    f"a finite, non-zero number)"
                )
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 10) for i in range(max(0, count))]
        else:
            values = parts
    else:
        values = [float(v) for v in text]
    if not values:
        raise DeconvvizError(f"{kind} range {text!r} has no points")
    return [_check_amount(kind, v) for v in values]


@dataclass
class InvarianceCurves:
    """The invariance measures of B images under one transform at A amounts.

    ``amounts`` ``(A,)``; ``layers`` the L places compared; ``distance`` ``(L, B, A)``
    raw Euclidean distances between feature vectors; ``norm`` ``(L,)`` the mean
    feature norm of the originals per layer; ``normalised`` ``(L, B, A)`` =
    ``distance / norm`` (NaN where a layer's features are all zero);
    ``probability`` ``(B, A)`` of class ``label`` ``(B,)``; ``predicted`` ``(B, A)``
    the most probable class. All float64 / int64 on the CPU.
    """

    kind: str
    amounts: torch.Tensor
    layers: List[FeatureLayer]
    distance: torch.Tensor
    norm: torch.Tensor
    probability: torch.Tensor
    label: torch.Tensor
    predicted: torch.Tensor

    @property
    def normalised(self) -> torch.Tensor:
        safe = torch.where(self.norm > 0, self.norm, torch.full_like(self.norm, float("nan")))
        return self.distance / safe.view(-1, 1, 1)


def invariance_curves(
    model: nn.Module,
    images: torch.Tensor,
    labels: Optional[Union[Sequence[int], torch.Tensor]] = None,
    kind: str = "translate",
    amounts: Union[str, Sequence[float]] = "-8:8:1",
    layers: Sequence[LayerSpec] = (1, 2, "classifier"),
    fill: Union[str, float] = "grey",
    batch_size: int = 256,
) -> InvarianceCurves:
    """Zeiler & Fergus Figure 5 for normalised images ``(B, C, H, W)``.

    Every image is transformed (:func:`transform_images`) by each of ``amounts``
    (a range string for :func:`amount_range` or numbers) and run through the model
    with the originals; ``layers`` are conv layer numbers and/or ``"classifier"``.
    ``fill``: ``"grey"``, ``"mean"`` or a pixel value, in the model's normalisation
    (``model.meta``; mean 0, std 1 without metadata). Returns an
    :class:`InvarianceCurves`. The model is left as found (mode, no hooks).
    """
    _check_kind(kind)
    values = amount_range(amounts, kind)
    if images.ndim != 4 or images.shape[0] < 1:
        raise DeconvvizError(
            f"images must be (B, C, H, W) with B >= 1; got shape {tuple(images.shape)}"
        )
    b, c, h, w = images.shape
    feature_layers = resolve_feature_layers(model, layers, (h, w))
    if labels is None:
        labels = torch.full((b,), -1, dtype=torch.int64)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.numel() != b:
        raise DeconvvizError(f"{labels.numel()} labels for {b} images")
    norm = (getattr(model, "meta", None) or {}).get("normalization") or {
        "mean": [0.0] * c,
        "std": [1.0] * c,
    }
    fillv = fill_value(fill, norm["mean"], norm["std"])
    # An amount that leaves the images unchanged (the identity, exact by construction)
    # reuses the originals' pass, so its distance is exactly 0 whatever the batching.
    batches, where = [images], []
    for a in values:
        t = transform_images(images, kind, a, fillv)
        if torch.equal(t, images):
            where.append(0)
        else:
            where.append(len(batches))
            batches.append(t)
    feats, logits = extract_features(
        model, torch.cat(batches), feature_layers, batch_size=batch_size
    )
    ncls = logits.shape[1]
    if labels.numel() and int(labels.max()) >= ncls:
        raise DeconvvizError(
            f"label {int(labels.max())} out of range: the network has {ncls} classes"
        )
    pick = torch.tensor(where, dtype=torch.int64)
    prob = torch.softmax(logits, dim=1).view(len(batches), b, ncls)
    label = torch.where(labels < 0, prob[0].argmax(dim=1), labels)
    distance = torch.empty((len(feature_layers), b, len(values)), dtype=torch.float64)
    norms = torch.empty(len(feature_layers), dtype=torch.float64)
    for li, fl in enumerate(feature_layers):
        f = feats[fl].view(len(batches), b, -1)
        distance[li] = (f[pick] - f[:1]).norm(dim=2).t()
        norms[li] = f[0].norm(dim=1).mean()
    prob = prob[pick]
    probability = prob[:, torch.arange(b), label].t().contiguous()
    return InvarianceCurves(
        kind=kind,
        amounts=torch.tensor(values, dtype=torch.float64),
        layers=feature_layers,
        distance=distance,
        norm=norms,
        probability=probability,
        label=label,
        predicted=prob.argmax(dim=2).t().contiguous(),
    )
