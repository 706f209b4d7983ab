"""What a module call does: the :class:`~.ops.OpSpec` of a traced call of a module.

A node that calls a module (``nn.Conv2d``, ``nn.MaxPool2d``, a norm, ...) gets its op and
parameters from the module itself (:func:`classify_module`); function and method calls are
:mod:`.classify`'s. Both read a pool's window (:func:`pool_params`) and a conv's padding
(:func:`conv_padding`) alike, and name an op without a rule alike (:func:`unsupported`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import fx, nn

from .ops import OpSpec
from .targets import as_pair, module_kind
from .trace import is_torchvision

__all__ = ["classify_module", "pool_params", "conv_padding", "unsupported"]


def pool_params(kind: str, p: Dict[str, Any]) -> Dict[str, Any]:
    """A pool's ``kernel``, ``stride`` (the kernel by default), ``padding``, ``dilation``
    as ``(h, w)`` pairs and ``ceil_mode``, from its module's or call's arguments ``p``."""
    k = as_pair(p["kernel_size"])
    stride = p.get("stride")
    s = (
        k
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
        else as_pair(stride)
    )
    return {
        "kernel": k,
        "stride": s,
        "padding": as_pair(p.get("padding", 0)),
        "dilation": as_pair(p.get("dilation", 1)),
        "ceil_mode": bool(p.get("ceil_mode", False)),
    }


def conv_padding(padding, kernel, dilation) -> Tuple[Optional[Tuple[int, int]], str]:
    """Left/top padding of a conv (``'same'`` pads the extra pixel on the right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), ""
        if padding == "same":
            return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)), ""
        return None, f"padding={padding!r}"
    return as_pair(padding), ""


def unsupported(what: str, reason: str = "", module=None) -> OpSpec:
    """An op without a deconvnet rule: ``what`` it is, and ``reason`` where one is known."""
    return OpSpec("unsupported", what, module=module, reason=reason)


def classify_module(node: fx.Node, m: nn.Module) -> OpSpec:
    """The :class:`~.ops.OpSpec` of ``node``, a call of module ``m``."""
    what = type(m).__name__
    kind = module_kind(m)
    x = node.args[0] if node.args else None
    if kind is None or not isinstance(x, fx.Node):
        return unsupported(what, module=m)
    if kind == "conv":
        if m.padding_mode != "zeros":
            return unsupported(what, f"padding_mode={m.padding_mode!r} (zero padding only)", m)
        k, d = as_pair(m.kernel_size), as_pair(m.dilation)
        pad, bad = conv_padding(m.padding, k, d)
        if pad is None:
            return unsupported(what, bad, m)
        params = {
            "kernel": k,
            "stride": as_pair(m.stride),
            "padding": pad,
            "dilation": d,
            "groups": m.groups,
            "weight": ("module", "weight"),
        }
        return OpSpec("conv", what, (x,), params, m)
    if kind == "maxpool":
        if m.return_indices:
            return unsupported(what, "return_indices=True", m)
        return OpSpec(kind, what, (x,), pool_params(kind, vars(m)), m)
    if kind == "avgpool":
        params = pool_params(kind, vars(m))
        params.update(
            count_include_pad=bool(m.count_include_pad), divisor_override=m.divisor_override
        )
        return OpSpec(kind, what, (x,), params, m)
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        if getattr(m, "return_indices", False):
            return unsupported(what, "return_indices=True", m)
        return OpSpec(kind, what, (x,), {"output_size": m.output_size}, m)
    if kind == "batchnorm":
        if not is_torchvision(m, "ops.FrozenBatchNorm2d") and m.running_var is None:
            return unsupported(
                what,
                "no running statistics (track_running_stats=False), so it "
                "is not linear in eval mode",
                m,
            )
        return OpSpec(kind, what, (x,), {}, m)
    if kind == "linear":
        return OpSpec(kind, what, (x,), {"weight": ("module", "weight")}, m)
    if kind == "norm":
        return _norm_module(what, x, m)
    if kind == "permute":
        return OpSpec(kind, what, (x,), {"dims": tuple(int(d) for d in m.dims)}, m)
    return OpSpec(kind, what, (x,), {}, m)


def _norm_module(what: str, x: fx.Node, m: nn.Module) -> OpSpec:
    """LayerNorm (last dims), torchvision's LayerNorm2d (channels), GroupNorm, InstanceNorm."""
    weight = ("module", "weight")
    if is_torchvision(m, "models.convnext.LayerNorm2d"):
        params = {"stats": "channels", "eps": m.eps}
    elif isinstance(m, nn.LayerNorm):
        params = {"stats": "last", "dims": len(m.normalized_shape), "eps": m.eps}
    elif isinstance(m, nn.GroupNorm):
        params = {"stats": "groups", "groups": m.num_groups, "eps": m.eps}
    elif not m.training and m.track_running_stats and m.running_var is not None:
        # With running statistics in eval, an instance norm is a batch norm.
        return OpSpec("batchnorm", what, (x,), {}, m)
    else:
        params = {"stats": "groups", "groups": None, "eps": m.eps}
    params["weight"] = weight
    return OpSpec("norm", what, (x,), params, m)
