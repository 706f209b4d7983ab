"""Running a traced network: one node as the network would, out of place, and what each
op's deconvnet rule keeps (:mod:`.execute` runs the nodes a set of targets needs).

:func:`run_node` evaluates one node the way the network would, except that in-place
ops run out of place: an in-place ReLU must not overwrite a value the deconvnet
recorded, and it gives the same numbers. :func:`run_recorded` also returns what the
op's rule needs (a max pool's switches, a gate's value, a normalisation's factor).
"""

from __future__ import annotations

import copy
import operator
from typing import TYPE_CHECKING, Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

if TYPE_CHECKING:
    from .ops import OpSpec

__all__ = [
    "run_node",
    "run_recorded",
    "run_pool_with_switches",
    "bn_scale",
    "norm_factor",
    "norm_weight",
    "fetch_attr",
    "op_weight",
    "plain_module",
]


def fetch_attr(root: nn.Module, target: str):
    """``root``'s attribute at dotted path ``target`` (a parameter, buffer or module)."""
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# In-place functions and their out-of-place twins (same values, nothing overwritten).
_OUT_OF_PLACE = {
    torch.relu_: torch.relu,
    F.relu_: torch.relu,
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    F.elu_: F.elu,
    F.leaky_relu_: F.leaky_relu,
    F.hardtanh_: F.hardtanh,
}


_COPYING_TWIN = {"view": "reshape", "view_as": "reshape_as"}


def run_node(node: fx.Node, spec: OpSpec, root: nn.Module, args, kwargs):
    """Evaluate one fx node on concrete ``args``/``kwargs`` as the network would, out of place.

    ReLUs and eval-mode dropouts are computed here rather than by their modules,
    so nothing recorded can be overwritten by a later in-place op; ``Tensor.view``
    runs as ``reshape`` (same values), which also works on channels-last tensors.
    """
    op = spec.op
    if op == "relu":
        return torch.relu(args[0] if args else kwargs["input"])
    if op == "relu6":
        return F.hardtanh(args[0] if args else kwargs["input"], 0.0, 6.0)
    if op in ("dropout", "identity") and node.op != "call_method":
        return args[0] if args else kwargs["input"]
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        if getattr(m, "inplace", False) is True:
            m = copy.copy(m)
            m.inplace = False
        return m(*args, **kwargs)
    if node.op == "call_function":
        fn = _OUT_OF_PLACE.get(node.target, node.target)
        if kwargs.get("inplace"):
            kwargs = dict(kwargs, inplace=False)
        return fn(*args, **kwargs)
    if node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.endswith("__") and hasattr(args[0], name[:-1]):
            name = name[:-1]
        # The recording runs channels-last, where a view across channels must copy.
        name = _COPYING_TWIN.get(name, name)
        return getattr(args[0], name)(*args[1:], **kwargs)
    if node.op == "get_attr":
        return fetch_attr(root, node.target)
    raise AssertionError(f"run_node cannot evaluate a {node.op} node")


def run_recorded(
    node: fx.Node, spec: OpSpec, root: nn.Module, args, kwargs, slopes: bool
) -> Tuple[Any, Optional[torch.Tensor]]:
    """:func:`run_node`, and what the deconvnet's rule of the op needs: ``(value, kept)``.

    ``kept``: a max pool's switches; a gate's value (held by every rule); a
    normalisation's factor (its statistics held: the op is then ``x * factor +
    constant``, ``factor`` of the input's shape); with ``slopes``, an elementwise
    nonlinearity's local slope ``φ'(x)`` (for ReLU and ReLU6 the bool ``0 < y``
    (``< 6``), its support). None for every other op.
    """
    op = spec.op
    if op in ("maxpool", "adaptive_maxpool"):
        return run_pool_with_switches(spec, args[0])
    if op == "gate" and spec.params.get("held") is None:
        scale = spec.module._scale(args[0])  # torchvision's SqueezeExcitation
        return scale * args[0], scale
    if op == "nonlinear" and slopes:
        with torch.enable_grad():
            x = args[0].detach().requires_grad_(True)
            y = run_node(node, spec, root, (x,) + tuple(args[1:]), kwargs)
            (slope,) = torch.autograd.grad(y, x, torch.ones_like(y))
        return y.detach(), slope
    if op == "norm" and node.op == "call_module" and spec.params["stats"] == "last":
        m = spec.module
        if plain_module(m, nn.LayerNorm) and len(args) == 1 and not kwargs:
            # The statistics the forward itself used, in the same call (no second pass).
            value, _, rstd = torch.native_layer_norm(
                args[0], m.normalized_shape, m.weight, m.bias, m.eps
            )
            return value, rstd.to(value.dtype)
    value = run_node(node, spec, root, args, kwargs)
    if op == "gate":
        held = spec.params["held"]
        where = node.args.index(held) if held in node.args else None
        return value, args[where] if where is not None else kwargs["other"]
    if op == "norm":
        return value, norm_factor(spec, args[0], root)
    if slopes and op == "relu":
        return value, value > 0
    if slopes and op == "relu6":
        return value, (value > 0) & (value < 6)
    return value, None


def norm_weight(spec: OpSpec, root: nn.Module, ndim: int) -> Optional[torch.Tensor]:
    """A normalisation's weight as it multiplies an ``ndim``-d map of the node's layout (per
    channel ``(1, C, 1, ...)`` for statistics over channels or groups; the normalised shape
    for LayerNorm's last dims), or None without one."""
    p = spec.params
    where, name = p["weight"] if p["weight"] is not None else (None, None)
    if where is None:
        return None
    weight = getattr(spec.module, name) if where == "module" else fetch_attr(root, name)
    if weight is None or p["stats"] == "last":
        return weight
    return weight.view((1, -1) + (1,) * (ndim - 2))


def norm_factor(spec: OpSpec, x: torch.Tensor, root: nn.Module) -> torch.Tensor:
    """What a normalisation multiplies ``x`` by once its statistics are held, before its
    weight (:func:`norm_weight`): ``1 / sqrt(var + eps)`` in the shape of the statistics
    (``(B, ..., 1)`` over LayerNorm's last dims, ``(B, 1, H, W)`` over the channels of
    LayerNorm2d, ``(B, C, 1, 1)`` per image and group for GroupNorm and InstanceNorm),
    which broadcasts over ``x`` (a fraction of its size)."""
    p = spec.params
    eps = p["eps"]
    if p["stats"] == "last":
        dims = tuple(range(-p["dims"], 0))
        factor = (x.var(dims, unbiased=False, keepdim=True) + eps).rsqrt()
    elif p["stats"] == "channels":
        factor = (x.var(1, unbiased=False, keepdim=True) + eps).rsqrt()
    else:
        groups = p["groups"] or x.shape[1]
        flat = x.reshape(x.shape[0], groups, -1)
        factor = (flat.var(-1, unbiased=False) + eps).rsqrt()  # (B, groups)
        factor = factor.repeat_interleave(x.shape[1] // groups, dim=1)
        factor = factor.view(x.shape[:2] + (1,) * (x.dim() - 2))
    return factor.to(x.dtype).contiguous()


def run_pool_with_switches(spec: OpSpec, x: torch.Tensor):
    """A max pool's output and its switches (flat argmax into each input plane), in one call."""
    p = spec.params
    if spec.op == "adaptive_maxpool":
        return F.adaptive_max_pool2d(x, p["output_size"], return_indices=True)
    return F.max_pool2d(
        x,
        p["kernel"],
        p["stride"],
        p["padding"],
        p["dilation"],
        ceil_mode=p["ceil_mode"],
        return_indices=True,
    )


def op_weight(spec: OpSpec, root: nn.Module) -> torch.Tensor:
    """The weight tensor a ``conv`` or ``linear`` op uses now (shared, never copied)."""
    where, name = spec.params["weight"]
    return getattr(spec.module, name) if where == "module" else fetch_attr(root, name)


def plain_module(m: nn.Module, cls: Optional[type]) -> bool:
    """``m`` runs ``cls.forward`` as it is: no subclass's or instance's own forward, no hook
    (``cls`` None: a torchvision class while torchvision is not imported)."""
    return (
        cls is not None
        and isinstance(m, cls)
        and type(m).forward is cls.forward
        and "forward" not in vars(m)
        and not m._forward_hooks
        and not m._forward_pre_hooks
    )


def bn_scale(bn: nn.Module) -> torch.Tensor:
    """An eval batch norm's per-channel scale, ``weight / sqrt(running_var + eps)`` (what it
    multiplies a map by; the folded conv's and the reverse pass's one formula)."""
    scale = (bn.running_var + bn.eps).rsqrt()
    return scale * bn.weight if bn.weight is not None else scale
