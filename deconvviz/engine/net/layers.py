"""Layers of a convolutional stack: finding and numbering them, their sizes and receptive fields.

The geometry of single units (boxes, patches) lives in :mod:`.geometry`.

The conv stack is ``model.features`` when the model has one (our CNN,
torchvision's AlexNet and VGG), or the model itself when it is an
``nn.Sequential``. **Layer L** is the L-th ``Conv2d`` of that sequence (counting
from 1, as in Zeiler & Fergus); its *block* runs from that conv up to the next
conv, so the layer's output is the block's output (after its ReLU and max pool).
Features are channel indices within a layer, counting from 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import nn

from ...errors import DeconvvizError

__all__ = [
    "LayerInfo",
    "conv_stack",
    "list_layers",
    "get_layer",
    "SUPPORTED_MODULES",
    "check_supported",
]

SUPPORTED_MODULES = (nn.Conv2d, nn.ReLU, nn.MaxPool2d)


def conv_stack(model: nn.Module) -> nn.Sequential:
    """The plain sequence of modules the deconvnet mirrors."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return features
    if isinstance(model, nn.Sequential):
        return model
    raise DeconvvizError(
        f"{type(model).__name__} has no 'features' sequence; the deconvnet "
        "needs the conv stack as an nn.Sequential (model.features)"
    )


def _stack_prefix(model: nn.Module) -> str:
    features = getattr(model, "features", None)
    return "features." if isinstance(features, nn.Sequential) else ""


def _pair(v) -> Tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _geometry(module: nn.Module):
    """(kernel, stride, padding, dilation) as pairs, or None for size-preserving modules."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return (
            _pair(module.kernel_size),
            _pair(stride),
            _pair(module.padding),
            _pair(module.dilation),
        )
    return None


def check_supported(model: nn.Module, stop: Optional[int] = None) -> None:
    """Raise a clear error for any module in ``stack[:stop]`` the deconvnet cannot invert."""
    stack = conv_stack(model)
    prefix = _stack_prefix(model)
    for i, m in enumerate(list(stack)[:stop]):
        if not isinstance(m, SUPPORTED_MODULES):
            raise DeconvvizError(
                f"module {prefix}{i} ({type(m).__name__}) is not supported by the "
                "deconvnet (only Conv2d, ReLU and MaxPool2d)"
            )
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise DeconvvizError(
                f"module {prefix}{i} (Conv2d) uses padding_mode="
                f"{m.padding_mode!r}; the deconvnet supports zero padding only"
            )
        if isinstance(m, nn.Conv2d) and isinstance(m.padding, str):
            raise DeconvvizError(
                f"module {prefix}{i} (Conv2d) uses padding={m.padding!r}; give "
                "the padding as numbers"
            )


@dataclass(frozen=True)
class LayerInfo:
    """One conv layer: its number, where its block sits, and its geometry.

    ``start``/``end`` index the block in the conv stack (``stack[start:end]``);
    ``output_size`` is the block output's (h, w); the receptive field of output
    unit (i, j) starts at input pixel ``(rf_start[0] + i * rf_jump[0], ...)`` and
    spans ``rf_size`` pixels (before clipping at the image border).
    """

    index: int
    path: str
    start: int
    end: int
    in_channels: int
    features: int
    input_size: Tuple[int, int]
    output_size: Tuple[int, int]
    rf_size: Tuple[int, int]
    rf_jump: Tuple[int, int]
    rf_start: Tuple[int, int]
    image_size: Tuple[int, int]

    def describe(self) -> str:
        return f"layer {self.index} ({self.path})"


def _out_len(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:  # PyTorch drops a last window starting in the padding
            out -= 1
        return out
    return span // s + 1


def list_layers(model: nn.Module, input_size: Optional[Tuple[int, int]] = None) -> List[LayerInfo]:
    """Every conv layer of the model's stack, numbered from 1.

    ``input_size`` is the image (h, w); by default it comes from the model's
    checkpoint metadata, or 32x32.
    """
    stack = list(conv_stack(model))
    prefix = _stack_prefix(model)
    if input_size is None:
        meta = getattr(model, "meta", None) or {}
        input_size = tuple(meta.get("input_size", (3, 32, 32))[-2:])
    h, w = (int(input_size[0]), int(input_size[1]))
    rf, jump, start = [1, 1], [1, 1], [0, 0]
    conv_idx = [i for i, m in enumerate(stack) if isinstance(m, nn.Conv2d)]
    layers = []
    for n, ci in enumerate(conv_idx):
        # A block runs up to the next conv; the last one to the end of the stack.
        end = conv_idx[n + 1] if n + 1 < len(conv_idx) else len(stack)
        in_size = (h, w)
        for m in stack[ci:end]:
            geo = _geometry(m)
            if geo is None:
                continue
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo
            ceil = bool(getattr(m, "ceil_mode", False))
            for ax, (k, s, p, d) in enumerate(((kh, sh, ph, dh), (kw, sw, pw, dw))):
                keff = d * (k - 1) + 1
                start[ax] = start[ax] - p * jump[ax]
                rf[ax] = rf[ax] + (keff - 1) * jump[ax]
                jump[ax] = jump[ax] * s
            h = _out_len(h, kh, sh, ph, dh, ceil)
            w = _out_len(w, kw, sw, pw, dw, ceil)
        conv = stack[ci]
        assert isinstance(conv, nn.Conv2d)  # conv_idx holds only Conv2d positions
        layers.append(
            LayerInfo(
                index=n + 1,
                path=f"{prefix}{ci}",
                start=ci,
                end=end,
                in_channels=conv.in_channels,
                features=conv.out_channels,
                input_size=in_size,
                output_size=(h, w),
                rf_size=(rf[0], rf[1]),
                rf_jump=(jump[0], jump[1]),
                rf_start=(start[0], start[1]),
                image_size=(int(input_size[0]), int(input_size[1])),
            )
        )
    return layers


def get_layer(
    model: nn.Module, layer: int, input_size: Optional[Tuple[int, int]] = None
) -> LayerInfo:
    """The :class:`LayerInfo` of layer ``layer`` (from 1), with a clear error when out of range."""
    layers = list_layers(model, input_size)
    if not layers:
        raise DeconvvizError("the model's conv stack has no Conv2d layer")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= len(layers):
        raise DeconvvizError(
            f"layer {layer} is out of range: this network has layers "
            f"1..{len(layers)} (see 'deconvviz layers')"
        )
    return layers[layer - 1]
