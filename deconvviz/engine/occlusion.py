"""Occlusion sensitivity (Zeiler & Fergus, arXiv 1311.2901, section 4.2 and Figure 7).

A square of ``size`` x ``size`` pixels slides over each image in steps of
``stride``; for every position of the square the occluded image goes through
the network and three things are recorded:

* ``activation``: the **total activation** (sum over all positions) of one
  feature map of one layer, by default the feature with the strongest single
  activation in the unoccluded image (the paper's Figure 7 b);
* ``probability``: the softmax probability of the correct class (Figure 7 d);
* ``predicted``: the most probable class (Figure 7 e).

The square is filled with ``fill``: ``"grey"`` is mid-grey, pixel value 0.5 in
every channel, i.e. ``(0.5 - mean) / std`` in the model's normalised input;
``"mean"`` is the training set's mean colour, i.e. exactly ``0`` in the
normalised input; a number ``v`` in ``[0, 1]`` is the pixel value ``v`` in
every channel. Square positions are the top-left corners
``0, stride, 2 * stride, ...`` along each axis, plus the last position
``H - size`` so that the square also covers the bottom and right borders.
All positions of one image go through the network in batched forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import DeconvvizError
from .net.execute import execute
from .net.network import graph_of, resolve_info

__all__ = ["OcclusionMaps", "occlusion_maps", "occluder_positions", "fill_value", "occlude"]


@dataclass
class OcclusionMaps:
    """Occlusion maps of B images over an ``(ny, nx)`` grid of square positions.

    ``activation``: ``(B, ny, nx)`` total activation of feature ``feature[b]`` of
    ``layer`` with the square at each position; ``probability``: ``(B, ny, nx)``
    probability of class ``target[b]``: the image's ``label[b]``, or for an
    unlabelled image (``label`` -1) the class the network predicts for it
    unoccluded; ``predicted``: ``(B, ny, nx)`` int64 most
    probable class; ``base_activation``, ``base_probability``, ``base_predicted``:
    ``(B,)`` the same for the unoccluded image; ``ys``, ``xs``: top-left corners
    of the square (``(ny,)``, ``(nx,)``); ``fill``: ``(3,)`` the normalised value
    the square is filled with.
    """

    activation: torch.Tensor
    probability: torch.Tensor
    predicted: torch.Tensor
    feature: torch.Tensor
    label: torch.Tensor
    target: torch.Tensor
    base_activation: torch.Tensor
    base_probability: torch.Tensor
    base_predicted: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor
    layer: Union[int, str]
    size: int
    stride: int
    fill: torch.Tensor
    fill_name: str


def occluder_positions(extent: int, size: int, stride: int) -> List[int]:
    """Top-left corners along one axis: ``0, stride, ...`` and ``extent - size`` last."""
    if size < 1 or size > extent:
        raise DeconvvizError(f"occluder size must lie in 1..{extent}; got {size}")
    if stride < 1:
        raise DeconvvizError(f"occluder stride must be at least 1; got {stride}")
    pos = list(range(0, extent - size + 1, stride))
    if pos[-1] != extent - size:
        pos.append(extent - size)
    return pos


def fill_value(
    fill: Union[str, float], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The normalised ``(3,)`` value of the occluder: ``"grey"``, ``"mean"`` or a pixel value."""
    m = torch.as_tensor(mean, dtype=torch.float64)
    s = torch.as_tensor(std, dtype=torch.float64)
    if isinstance(fill, str):
        if fill == "grey":
            return (0.5 - m) / s
        if fill == "mean":
            return torch.zeros_like(m)
        try:
            fill = float(fill)
        except ValueError:
            raise DeconvvizError(
                f"fill must be 'grey', 'mean' or a pixel value in [0, 1]; got {fill!r}"
            ) from None
    v = float(fill)
    if not 0.0 <= v <= 1.0:
        raise DeconvvizError(f"fill pixel value must lie in [0, 1]; got {v}")
    return (v - m) / s


def occlude(
    image: torch.Tensor, ys: Sequence[int], xs: Sequence[int], size: int, fill: torch.Tensor
) -> torch.Tensor:
    """All occluded copies of one normalised image ``(C, H, W)``.

    Returns ``(len(ys) * len(xs), C, H, W)``, row-major over (y, x); copy
    ``i * len(xs) + j`` has the square at rows ``ys[i]:ys[i]+size`` and columns
    ``xs[j]:xs[j]+size`` set to ``fill`` ``(C,)``.
    """
    c, h, w = image.shape
    ny, nx = len(ys), len(xs)
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    y0 = torch.as_tensor(list(ys)).view(ny, 1, 1)
    x0 = torch.as_tensor(list(xs)).view(nx, 1, 1)
    in_y = (yy >= y0) & (yy < y0 + size)  # (ny, h, 1)
    in_x = (xx >= x0) & (xx < x0 + size)  # (nx, 1, w)
    mask = (in_y.unsqueeze(1) & in_x.unsqueeze(0)).reshape(ny * nx, 1, h, w)
    f = fill.to(image.dtype).to(image.device).view(1, c, 1, 1)
    return torch.where(mask.to(image.device), f, image.unsqueeze(0))


def occlusion_maps(
    model: nn.Module,
    images: torch.Tensor,
    labels: Optional[Union[Sequence[int], torch.Tensor]] = None,
    layer: Union[int, str] = 2,
    feature: Optional[Union[int, Sequence[int]]] = None,
    size: int = 8,
    stride: int = 2,
    fill: Union[str, float] = "grey",
    batch_size: int = 256,
) -> OcclusionMaps:
    """Occlusion-sensitivity maps of normalised images ``(B, 3, H, W)``.

    ``labels`` ``(B,)``: the correct classes (``None`` or ``-1`` entries: the class
    the network predicts for the unoccluded image). ``feature``: one feature of
    ``layer`` for every image, one per image, or ``None`` for each image's
    strongest feature (largest single activation). ``layer``: a layer number of a
    plain conv stack (its output is read with a hook during the model's own
    forward) or a node name of any network (read from the traced graph).
    The normalisation for ``fill`` comes from ``model.meta`` (mean 0, std 1 when
    the model has no metadata). Returns an :class:`OcclusionMaps`.
    """
    if images.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    graph = graph_of(model, (h, w))
    info = resolve_info(graph, layer)
    ys = occluder_positions(h, size, stride)
    xs = occluder_positions(w, size, stride)
    norm = (getattr(model, "meta", None) or {}).get("normalization") or {
        "mean": [0.0] * c,
        "std": [1.0] * c,
    }
    fillv = fill_value(fill, norm["mean"], norm["std"])
    if fillv.numel() != c:
        raise DeconvvizError(f"the normalisation has {fillv.numel()} channels, the images {c}")
    if labels is None:
        labels = torch.full((b,), -1, dtype=torch.int64)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if labels.numel() != b:
        raise DeconvvizError(f"{labels.numel()} labels for {b} images")
    captured = {}

    last = graph.output_name()

    def run(x):
        # One pass gives the node and the logits where the model returns one node.
        got = execute(graph, x, [info.name] + ([last] if last else []))
        out = got[info.name]
        captured["out"] = out.reshape(out.shape[0], out.shape[1], *out.shape[2:4] or (1, 1))
        return got[last] if last else model(x)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base_logits = run(images)
            base_out = captured["out"]  # (B, F, h', w')
            nfeat = base_out.shape[1]
            if feature is None:
                feat = base_out.flatten(2).amax(dim=2).argmax(dim=1)
            else:
                feat = torch.as_tensor(feature, dtype=torch.int64).reshape(-1)
                if feat.numel() == 1:
                    feat = feat.expand(b).clone()
                if feat.numel() != b:
                    raise DeconvvizError(f"{feat.numel()} features for {b} images")
            feat = feat.cpu()
            if feat.numel() and (int(feat.min()) < 0 or int(feat.max()) >= nfeat):
                what = f"layer {layer}" if isinstance(layer, int) else info.describe()
                raise DeconvvizError(f"feature out of range: {what} has features 0..{nfeat - 1}")
            base_prob_all = torch.softmax(base_logits.double(), dim=1).cpu()
            base_pred = base_prob_all.argmax(dim=1)
            ncls = base_prob_all.shape[1]
            if labels.numel() and int(labels.max()) >= ncls:
                raise DeconvvizError(
                    f"label {int(labels.max())} out of range: the network has {ncls} classes"
                )
            # An unlabelled image keeps label -1; its map shows the predicted class.
            label = torch.where(labels < 0, base_pred, labels)
            bidx = torch.arange(b)
            base_act = base_out.double().cpu()[bidx, feat].sum(dim=(1, 2))
            base_prob = base_prob_all[bidx, label]
            ny, nx = len(ys), len(xs)
            act = torch.empty((b, ny * nx), dtype=torch.float64)
            prob = torch.empty((b, ny * nx), dtype=torch.float64)
            pred = torch.empty((b, ny * nx), dtype=torch.int64)
            for i in range(b):
                variants = occlude(images[i], ys, xs, size, fillv)
                for s in range(0, variants.shape[0], batch_size):
                    chunk = variants[s : s + batch_size]
                    logits = run(chunk)
                    out = captured["out"]
                    p = torch.softmax(logits.double(), dim=1).cpu()
                    act[i, s : s + len(chunk)] = out[:, int(feat[i])].double().sum(dim=(1, 2)).cpu()
                    prob[i, s : s + len(chunk)] = p[:, int(label[i])]
                    pred[i, s : s + len(chunk)] = p.argmax(dim=1)
    finally:
        model.train(was_training)
    return OcclusionMaps(
        activation=act.view(b, ny, nx),
        probability=prob.view(b, ny, nx),
        predicted=pred.view(b, ny, nx),
        feature=feat,
        label=labels.clone(),
        target=label,
        base_activation=base_act,
        base_probability=base_prob,
        base_predicted=base_pred,
        ys=torch.as_tensor(ys),
        xs=torch.as_tensor(xs),
        layer=layer,
        size=size,
        stride=stride,
        fill=fillv.float(),
        fill_name=str(fill),
    )
