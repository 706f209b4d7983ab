"""The deconvnet of Zeiler & Fergus (arXiv 1311.2901, section 2.1).

A feature map of layer L is projected back to pixels by walking the conv stack
backwards from the end of block L. At each module, in reverse:

* ``MaxPool2d``: **unpool**. ``unpool="switches"`` puts each value back where the
  max came from in *that image's* forward pass (the recorded switches).
  Where windows overlap (e.g. AlexNet's 3x3 stride-2 pools) two values can land
  on one position; they are **summed**, which is what the gradient does (and
  unlike ``max_unpool2d``, deterministic). ``unpool="nearest"`` is the
  switch-free shortcut of the source material: each value is copied to its
  whole pooling window (overlaps summed too).
* ``ReLU``: **rectify** according to ``rule``: ``"deconvnet"`` passes
  ``relu(signal)`` (the paper); ``"guided"`` also masks by the forward
  activation (guided backprop); ``"gradient"`` masks by the forward activation
  only (plain backprop).
* ``Conv2d``: **filter** with the transposed convolution that shares the conv's
  own weight tensor (no bias, no copy).

All variants are parameters of :func:`deconvolve`; :func:`project` is the
one-feature convenience used from notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeconvvizError
from .cropped import crop_bytes_per_seed, crop_pays, crop_record
from .layers import LayerInfo, conv_stack, get_layer
from .receptive import cut_windows, windows_for
from .recording import Recording, record_pass
from .variants import MODES, RULES, UNPOOLS
from .windowed import paste_windows, window_bytes_per_seed, window_pass

__all__ = ["RULES", "UNPOOLS", "MODES", "Projection", "deconvolve", "project",
           "seed_maps", "reverse_pass", "project_recorded", "project_cropped", "crop_applies",
           "recorded_forward"]



@dataclass
class Projection:
    """Result of a batched projection of S seeds.

    ``projections``: raw, signed ``(S, 3, H, W)`` in the model's input space;
    ``image_index``: ``(S,)`` index into the batch of images; ``feature``: ``(S,)``;
    ``activation``: ``(S,)`` the seeded activation (its maximum for ``mode="map"``);
    ``position``: ``(S, 2)`` (row, col) in the layer's output of that activation;
    ``layer``: the layer number, or the node name given to the graph engine
    (:mod:`.graph_deconv`).
    """

    projections: torch.Tensor
    image_index: torch.Tensor
    feature: torch.Tensor
    activation: torch.Tensor
    position: torch.Tensor
    layer: Union[int, str]
    mode: str
    rule: str
    unpool: str


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise DeconvvizError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _crop(full: torch.Tensor, pad: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """Cut a full transposed-conv output down to the forward input's size."""
    ph, pw = pad
    out = full[..., ph:ph + size[0], pw:pw + size[1]]
    short_h, short_w = size[0] - out.shape[-2], size[1] - out.shape[-1]
    if short_h > 0 or short_w > 0:
        out = F.pad(out, (0, max(0, short_w), 0, max(0, short_h)))
    return out


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _unpool(m: nn.MaxPool2d, signal: torch.Tensor, switches: Optional[torch.Tensor],
            in_size: Tuple[int, int], how: str) -> torch.Tensor:
    s, c, h, w = signal.shape
    if how == "switches":
        out = signal.new_zeros((s, c, in_size[0] * in_size[1]))
        out.scatter_add_(2, switches.reshape(s, c, h * w), signal.reshape(s, c, h * w))
        return out.view(s, c, in_size[0], in_size[1])
    k, st = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
    ones = signal.new_ones((c, 1) + k)
    full = F.conv_transpose2d(signal, ones, stride=st, dilation=_pair(m.dilation), groups=c)
    return _crop(full, _pair(m.padding), in_size)


def _rectify(signal: torch.Tensor, mask: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "deconvnet":
        return signal.clamp(min=0)
    if rule == "guided":
        return signal.clamp(min=0) * mask
    return signal * mask


def _filter(m: nn.Conv2d, signal: torch.Tensor, in_size: Tuple[int, int]) -> torch.Tensor:
    # Channels-last runs the transposed conv about 1.5x faster on the CPU.
    signal = signal.contiguous(memory_format=torch.channels_last)
    full = F.conv_transpose2d(signal, m.weight, stride=m.stride, dilation=m.dilation,
                              groups=m.groups)
    return _crop(full, _pair(m.padding), in_size)


def reverse_pass(model: nn.Module, rec: Recording, end: int, signal: torch.Tensor,
                 image_index: torch.Tensor, rule: str = "deconvnet",
                 unpool: str = "switches") -> torch.Tensor:
    """Send ``signal`` (S, C, h, w), the output of ``stack[:end]``, back to pixels.

    Seed ``s`` uses the recorded switches and masks of image ``image_index[s]``.
    """
    modules = list(conv_stack(model))
    idx = image_index.to(signal.device)
    for i in range(end - 1, -1, -1):
        m = modules[i]
        if isinstance(m, nn.MaxPool2d):
            sw = rec.switches[i].index_select(0, idx) if unpool == "switches" else None
            signal = _unpool(m, signal, sw, rec.in_sizes[i], unpool)
        elif isinstance(m, nn.ReLU):
            mask = None if rule == "deconvnet" else rec.masks[i].index_select(0, idx)
            signal = _rectify(signal, mask, rule)
        else:
            signal = _filter(m, signal, rec.in_sizes[i])
    return signal


def seed_maps(output: torch.Tensor, image_index: torch.Tensor, feature: torch.Tensor,
              mode: str, position: Optional[torch.Tensor] = None):
    """Build the seed maps for a layer output ``(B, C, h, w)``.

    Every channel but the chosen feature is zero. ``mode="max"``: only the
    feature's strongest activation is kept (the paper); ``"map"``: its whole
    map (the source material); ``"position"``: the activation at ``position``.
    Returns ``(seeds (S, C, h, w), activation (S,), position (S, 2))``.
    Ties for the maximum go to the first position in row-major order.
    """
    b, c, h, w = output.shape
    s = image_index.shape[0]
    maps = output[image_index, feature]                      # (S, h, w)
    flat = maps.reshape(s, h * w)
    if mode == "position":
        pos = position.to(torch.int64)
        flat_pos = pos[:, 0] * w + pos[:, 1]
    else:
        flat_pos, _, pos = _max_positions(output, image_index, feature)
    act = flat.gather(1, flat_pos.view(s, 1)).view(s)
    seeds = output.new_zeros((s, c, h * w))
    rows = torch.arange(s, device=output.device)
    if mode == "map":
        seeds[rows, feature] = flat
    else:
        seeds[rows, feature, flat_pos] = act
    return seeds.view(s, c, h, w), act, pos


#: Memory one batch of seeds may take in :func:`~deconvviz.engine.windowed.window_pass`.
SEED_BATCH_BYTES = 256 * 2 ** 20


def _windowed(model: nn.Module, info: LayerInfo, mode: str, unpool: str) -> bool:
    """Whether seeds take the receptive-field-window pass (one position, switches)."""
    return mode != "map" and unpool == "switches" and conv_stack(model)[info.start].groups == 1


def project_recorded(model: nn.Module, rec: Recording, info: LayerInfo, image_index: torch.Tensor,
                     feature: torch.Tensor, *, mode: str = "max", rule: str = "deconvnet",
                     unpool: str = "switches", position: Optional[torch.Tensor] = None,
                     windows: bool = False):
    """Seed and project S seeds of layer ``info`` from a recorded forward pass.

    Seed ``s`` is feature ``feature[s]`` of recorded image ``image_index[s]``.
    Returns ``(projections, activation (S,), position (S, 2))``; projections are
    ``(S, 3, H, W)``, or with ``windows=True`` ``(S, 3, rf_h, rf_w)``: each cut to
    its seed's receptive-field window (unclipped top-left ``info.rf_start +
    position * info.rf_jump``; zero outside the image), outside which a seed's
    projection is zero anyway.
    One-position seeds with switches (``mode`` ``"max"`` or ``"position"``) go
    back through their receptive-field windows only
    (:func:`~deconvviz.engine.windowed.window_pass`), in batches of equal window
    size; everything else takes the full-image :func:`reverse_pass`.
    """
    output = rec.blocks[info.index].output
    if _windowed(model, info, mode, unpool):
        if mode == "max":
            _, act, pos = _max_positions(output, image_index, feature)
        else:
            pos = position.to(torch.int64)
            act = output[image_index, feature, pos[:, 0], pos[:, 1]]
        size, canvas = _canvas(info, pos, windows)
        per_seed = window_bytes_per_seed(model, info, output.dtype)
        step = max(1, SEED_BATCH_BYTES // max(1, per_seed))
        parts = []
        for c0 in range(0, image_index.shape[0], step):
            sl = slice(c0, c0 + step)
            win, origin = window_pass(model, rec, info, image_index[sl], feature[sl], pos[sl],
                                      act[sl], rule)
            parts.append(paste_windows(win, origin, canvas[sl], size))
        proj = torch.cat(parts) if parts else output.new_zeros((0, _in_channels(model)) + size)
        return proj, act, pos
    seeds, act, pos = seed_maps(output, image_index, feature, mode, position)
    proj = reverse_pass(model, rec, info.end, seeds, image_index, rule=rule, unpool=unpool)
    if windows:
        box, origin = windows_for(info, pos.cpu())
        proj = cut_windows(proj, box.to(proj.device), origin.to(proj.device), info.rf_size)
    return proj, act, pos


def _canvas(info: LayerInfo, pos: torch.Tensor, windows: bool):
    """Size and per-seed top-left of the canvas a projection is pasted on: the
    receptive-field window with ``windows``, else the whole image."""
    if windows:
        return tuple(info.rf_size), windows_for(info, pos)[1]
    return tuple(info.image_size), torch.zeros_like(pos)


def crop_applies(model: nn.Module, info: LayerInfo, mode: str, unpool: str, seeds: int,
                 images: int) -> bool:
    """Whether :func:`project_cropped` serves these seeds: one known position each,
    switches, and fewer multiply-adds than recording the ``images`` whole."""
    return mode == "position" and _windowed(model, info, mode, unpool) and crop_pays(
        model, info, seeds, images)


def project_cropped(model: nn.Module, images: torch.Tensor, info: LayerInfo,
                    image_index: torch.Tensor, feature: torch.Tensor, position: torch.Tensor, *,
                    rule: str = "deconvnet", windows: bool = False):
    """:func:`project_recorded` for seeds at known positions without a whole-image
    forward pass: each batch of seeds records the forward pass inside its seeds'
    receptive fields only (:func:`~deconvviz.engine.cropped.crop_record`) and goes
    back through those windows. ``images`` is the model input; seed ``s`` is at
    ``position[s]`` of image ``image_index[s]``. Returns ``(projections, activation
    (S,), position (S, 2))`` as :func:`project_recorded` does."""
    pos = position.to(torch.int64)
    size, canvas = _canvas(info, pos, windows)
    per_seed = (window_bytes_per_seed(model, info, images.dtype)
                + crop_bytes_per_seed(model, info, images.dtype))
    step = max(1, SEED_BATCH_BYTES // max(1, per_seed))
    parts, acts = [], []
    for c0 in range(0, image_index.shape[0], step):
        sl = slice(c0, c0 + step)
        rec, out = crop_record(model, images, info, image_index[sl], pos[sl],
                               masks=rule != "deconvnet")
        local = torch.arange(out.shape[0], device=out.device)
        act = out[local, feature[sl], 0, 0]
        win, origin = window_pass(model, rec, info, local, feature[sl], pos[sl], act, rule)
        parts.append(paste_windows(win, origin, canvas[sl], size))
        acts.append(act)
    if not parts:
        return (images.new_zeros((0, images.shape[1]) + size), images.new_zeros((0,)), pos)
    return torch.cat(parts), torch.cat(acts), pos


def _in_channels(model: nn.Module) -> int:
    return conv_stack(model)[0].in_channels


def _max_positions(output: torch.Tensor, image_index: torch.Tensor, feature: torch.Tensor):
    """First row-major maximum of each seed's map: ``(flat, activation, (row, col))``."""
    w = output.shape[-1]
    flat = output[image_index, feature].flatten(1)
    where = flat.argmax(dim=1)
    act = flat.gather(1, where.view(-1, 1)).view(-1)
    return where, act, torch.stack([where // w, where % w], dim=1)


def recorded_forward(model: nn.Module, images: torch.Tensor, end: int,
                     masks: bool = True) -> Recording:
    """Run ``stack[:end]`` on ``images`` and return its :class:`Recording` (switches,
    ReLU masks with ``masks``, the layer's block output; see
    :func:`~deconvviz.engine.recording.record_pass`).

    The pass runs in channels-last memory format: on the CPU its max pools and
    convolutions are several times faster that way, and it is the scan's
    format too, so the recorded values are the scan's.
    """
    return record_pass(model, images.contiguous(memory_format=torch.channels_last), end, masks)


def _as_index(v, n: int) -> torch.Tensor:
    """A 1-D int64 tensor; a single value is broadcast to ``n`` entries."""
    t = torch.as_tensor(v, dtype=torch.int64).reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n).clone()
    return t


def check_seeds(feature, image_index, batch: int, features: int, what: str
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(image_index, feature)`` of the seeds as 1-D int64 tensors (one seed per image by
    default, a single feature broadcast), checked against ``batch`` images and
    ``features`` channels of ``what`` (``"layer 2"``) with one-line errors."""
    idx = (torch.arange(batch) if image_index is None
           else torch.as_tensor(image_index, dtype=torch.int64).reshape(-1))
    feat = _as_index(feature, idx.numel())
    if feat.numel() != idx.numel():
        raise DeconvvizError(f"{feat.numel()} features for {idx.numel()} images")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= batch):
        raise DeconvvizError(f"image index out of range 0..{batch - 1}")
    if feat.numel() and (int(feat.min()) < 0 or int(feat.max()) >= features):
        bad = int(feat.max()) if int(feat.max()) >= features else int(feat.min())
        raise DeconvvizError(f"feature {bad} is out of range: {what} has features "
                             f"0..{features - 1} (see 'deconvviz layers')")
    return idx, feat


def deconvolve(model: nn.Module, images: torch.Tensor, layer: Union[int, str],
               feature: Union[int, Sequence[int], torch.Tensor],
               image_index: Optional[Union[Sequence[int], torch.Tensor]] = None, *,
               mode: str = "max", rule: str = "deconvnet", unpool: str = "switches",
               position: Optional[torch.Tensor] = None) -> Projection:
    """Project many (image, feature) seeds of one layer in **one batched pass**.

    ``images``: model input ``(B, 3, H, W)``. Seed ``s`` is feature ``feature[s]``
    of image ``image_index[s]`` (default: one seed per image, ``feature``
    broadcast). One forward pass up to the layer records switches (and masks)
    for each image that a seed uses; one batched reverse pass projects all
    seeds, one-position seeds (``max``, ``position``, with switches) inside
    their receptive fields only (:mod:`deconvviz.engine.windowed`).
    Returns a :class:`Projection` with full-image projections ``(S, 3, H, W)``.

    ``layer`` is a layer number of a plain conv stack (this sequential engine) or,
    for any network, a node name as torchvision names it (``"layer2.1.relu_1"``;
    see ``deconvviz layers --all``), served by the graph engine
    (:func:`deconvviz.engine.graph_deconv.deconvolve`), which gives equal results.
    """
    from .network import is_plain

    number = layer if isinstance(layer, int) and not isinstance(layer, bool) else (
        int(layer) if isinstance(layer, str) and layer.strip().isdigit() else None)
    if number is None or not is_plain(model):
        from .graph_deconv import deconvolve as graph_deconvolve
        return graph_deconvolve(model, images, layer, feature, image_index, mode=mode,
                                rule=rule, unpool=unpool, position=position)
    layer = number
    _check_choice("mode", mode, MODES)
    _check_choice("rule", rule, RULES)
    _check_choice("unpool", unpool, UNPOOLS)
    if images.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    info: LayerInfo = get_layer(model, layer, tuple(images.shape[-2:]))
    if images.shape[1] != conv_stack(model)[0].in_channels:
        raise DeconvvizError(f"images have {images.shape[1]} channels; the network takes "
                             f"{conv_stack(model)[0].in_channels}")
    b = images.shape[0]
    idx, feat = check_seeds(feature, image_index, b, info.features, f"layer {layer}")
    if mode == "position":
        if position is None:
            raise DeconvvizError("mode 'position' needs a position (row, col)")
        position = torch.as_tensor(position, dtype=torch.int64).reshape(-1, 2)
        if position.shape[0] == 1 and idx.numel() > 1:
            position = position.expand(idx.numel(), 2)
        oh, ow = info.output_size
        if (position[:, 0].min() < 0 or position[:, 0].max() >= oh or position[:, 1].min() < 0
                or position[:, 1].max() >= ow):
            raise DeconvvizError(f"position out of range: layer {layer} output is {oh}x{ow}")
    device = images.device
    # Record each image that some seed uses, once, and only up to the seed's layer;
    # or, where that costs less, each seed's receptive-field crop only.
    used, local = torch.unique(idx, return_inverse=True)
    if crop_applies(model, info, mode, unpool, idx.numel(), used.numel()):
        with torch.no_grad():
            proj, act, pos = project_cropped(
                model, images.contiguous(memory_format=torch.channels_last), info,
                idx.to(device), feat.to(device), position.to(device), rule=rule)
        return Projection(projections=proj, image_index=idx, feature=feat,
                          activation=act.cpu(), position=pos.cpu(), layer=layer, mode=mode,
                          rule=rule, unpool=unpool)
    if used.numel() < b:
        images = images[used.to(device)]
    with torch.no_grad():
        rec = recorded_forward(model, images, info.end, masks=rule != "deconvnet")
        proj, act, pos = project_recorded(
            model, rec, info, local.to(device), feat.to(device), mode=mode, rule=rule,
            unpool=unpool, position=None if position is None else position.to(device))
    return Projection(projections=proj, image_index=idx, feature=feat, activation=act.cpu(),
                      position=pos.cpu(), layer=layer, mode=mode, rule=rule, unpool=unpool)


def project(model: nn.Module, images: torch.Tensor, layer: Union[int, str], feature: int,
            mode: str = "max",
            rule: str = "deconvnet", unpool: str = "switches") -> torch.Tensor:
    """Project feature ``feature`` of layer ``layer`` back to pixels for each image.

    ``images``: model input ``(B, 3, H, W)`` (e.g. from :func:`deconvviz.load_data`).
    Returns the raw, signed projections ``(B, 3, H, W)``, one per image (all zero
    where the feature does not fire). ``mode``: ``"max"`` seeds the feature's
    strongest activation (Zeiler & Fergus, arXiv 1311.2901), ``"map"`` its whole
    map. ``rule``: ``"deconvnet"``, ``"guided"`` or ``"gradient"``; ``unpool``:
    ``"switches"`` or ``"nearest"``. See :mod:`deconvviz.deconvnet`.
    """
    if mode == "position":
        raise DeconvvizError("project() takes mode 'max' or 'map'; use deconvolve() for positions")
    return deconvolve(model, images, layer, feature, mode=mode, rule=rule,
                      unpool=unpool).projections
