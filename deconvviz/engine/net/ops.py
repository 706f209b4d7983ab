"""What each traced node of a network does: its op kind and parameters.

A node of the :mod:`torch.fx` graph is a module call (``call_module``), a function
(``call_function``) or a tensor method (``call_method``). :func:`classify` names
its **op** (the kind the deconvnet has a rule for) and its parameters in one
normal form, whether the network wrote ``nn.MaxPool2d``, ``F.max_pool2d`` or
``torch.max_pool2d``. Running a node is :mod:`.run`'s job.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .trace import is_torchvision, torchvision_class

__all__ = [
    "OpSpec",
    "OPS",
    "SPATIAL_WINDOW_OPS",
    "REACH",
    "WHOLE_IMAGE_OPS",
    "classify",
    "describe_target",
    "split_sizes",
]

#: Every op kind with a deconvnet rule (plus the bookkeeping kinds ``input``,
#: ``constant`` and ``unsupported``).
OPS = (
    "input",
    "constant",
    "conv",
    "relu",
    "relu6",
    "nonlinear",
    "gate",
    "norm",
    "maxpool",
    "adaptive_maxpool",
    "avgpool",
    "adaptive_avgpool",
    "batchnorm",
    "add",
    "scale",
    "cat",
    "reshape",
    "permute",
    "narrow",
    "split",
    "mean",
    "linear",
    "dropout",
    "identity",
    "unsupported",
)

#: Ops whose output position sees a kernel-sized window of its input.
SPATIAL_WINDOW_OPS = ("conv", "maxpool", "avgpool")

#: What one output position of an op reads of its inputs, for the seed's cone
#: (:func:`~deconvviz.engine.net.geometry.seed_frames`): ``"pointwise"`` the same
#: position of every input, ``"window"`` a kernel window, ``"adaptive"`` a window
#: where the input size is a multiple of the output's; an op not listed reads
#: everything, so a seed above it takes the whole image. A new elementwise op is
#: ``"pointwise"`` here and a transpose in ``deconv.reverse.TRANSPOSES``.
REACH = {
    "relu": "pointwise",
    "relu6": "pointwise",
    "nonlinear": "pointwise",
    "gate": "pointwise",
    "norm": "pointwise",
    "batchnorm": "pointwise",
    "add": "pointwise",
    "scale": "pointwise",
    "cat": "pointwise",
    "dropout": "pointwise",
    "identity": "pointwise",
    "conv": "window",
    "maxpool": "window",
    "avgpool": "window",
    "adaptive_maxpool": "adaptive",
    "adaptive_avgpool": "adaptive",
}

#: Ops whose recorded state may depend on the whole image, not only on the seed's cone: a
#: gate's value (a global average inside it) and a normalisation's per-image statistics
#: (not a LayerNorm over each position's channels:
#: :meth:`~deconvviz.engine.net.graph.Graph.holds_whole_image`). The reverse pass holds that
#: state, so its window still follows the gradient's support (``REACH``); a cone recording
#: takes it from a whole-image pass.
WHOLE_IMAGE_OPS = ("gate", "norm")


@dataclass(frozen=True)
class OpSpec:
    """One node's op in normal form.

    ``op``: a kind of :data:`OPS`; ``what``: the module class or function the
    network used (``"Conv2d"``, ``"F.relu"``, ``"Tensor.view"``), for messages;
    ``inputs``: the fx nodes (or ``None`` for a constant operand) that the op's
    transpose sends signal to, in its own order; ``params``: the op's parameters
    (kernel, stride, padding, ... as (h, w) pairs; see :func:`classify`);
    ``module``: the called module, if any; ``reason``: why an op is unsupported.
    """

    op: str
    what: str
    inputs: Tuple[Optional[fx.Node], ...] = ()
    params: Dict[str, Any] = field(default_factory=dict)
    module: Optional[nn.Module] = None
    reason: str = ""


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def describe_target(node: fx.Node, module: Optional[nn.Module] = None) -> str:
    """What the node calls, for messages: ``Conv2d``, ``F.relu``, ``torch.cat``, ``Tensor.view``."""
    if node.op == "call_module":
        return type(module).__name__ if module is not None else str(node.target)
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        t = node.target
        mod = getattr(t, "__module__", None) or ""
        name = getattr(t, "__name__", str(t))
        if mod.startswith(("torch.nn.functional", "torch._C._nn")):
            return f"F.{name}"
        if mod in ("_operator", "operator"):
            return f"operator.{name}"
        return f"torch.{name}" if mod.startswith("torch") or not mod else f"{mod}.{name}"
    return node.op


# Positional parameter names of the functions we normalise (the first is the input).
_SIGNATURES = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "maxpool": (
        "input",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "ceil_mode",
        "return_indices",
    ),
    "avgpool": (
        "input",
        "kernel_size",
        "stride",
        "padding",
        "ceil_mode",
        "count_include_pad",
        "divisor_override",
    ),
    "adaptive": ("input", "output_size", "return_indices"),
    "dropout": ("input", "p", "training", "inplace"),
    "linear": ("input", "weight", "bias"),
    "cat": ("tensors", "dim"),
    "mean": ("input", "dim", "keepdim"),
    "transpose": ("input", "dim0", "dim1"),
    "relu": ("input", "inplace"),
    "batch_norm": (
        "input",
        "running_mean",
        "running_var",
        "weight",
        "bias",
        "training",
        "momentum",
        "eps",
    ),
    "layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
    "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
    "instance_norm": (
        "input",
        "running_mean",
        "running_var",
        "weight",
        "bias",
        "use_input_stats",
        "momentum",
        "eps",
    ),
    "split": ("tensor", "split_size_or_sections", "dim"),
}

# Elementwise nonlinearities φ other than ReLU: the rule needs φ'(x), recorded at the forward.
_NONLINEAR_FUNCTIONS = (
    F.silu,
    F.gelu,
    F.hardswish,
    F.mish,
    F.elu,
    F.elu_,
    F.celu,
    F.selu,
    F.leaky_relu,
    F.leaky_relu_,
    F.prelu,
    F.softplus,
    F.hardtanh,
    F.hardtanh_,
    torch.sigmoid,
    F.sigmoid,
    F.hardsigmoid,
    torch.tanh,
    F.tanh,
)
_NONLINEAR_MODULES = (
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Softplus,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Tanh,
)
# What a gate is: the output of a sigmoid (or hard sigmoid), seen through reshapes.
_GATE_TARGETS = (nn.Sigmoid, nn.Hardsigmoid, torch.sigmoid, F.sigmoid, F.hardsigmoid, "sigmoid")
_RESHAPE_TARGETS = (
    "view",
    "reshape",
    "flatten",
    "expand",
    "expand_as",
    "unsqueeze",
    "squeeze",
    torch.reshape,
    torch.flatten,
    torch.unsqueeze,
    torch.squeeze,
)
_NORM_FUNCTIONS = {
    F.layer_norm: "layer_norm",
    F.group_norm: "group_norm",
    F.instance_norm: "instance_norm",
}

_FUNCTIONS: Dict[Callable, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.relu_: "relu",
    F.relu_: "relu",
    F.relu6: "relu6",
    F.max_pool2d: "maxpool",
    torch.max_pool2d: "maxpool",
    F.adaptive_max_pool2d: "adaptive_maxpool",
    F.avg_pool2d: "avgpool",
    F.adaptive_avg_pool2d: "adaptive_avgpool",
    F.dropout: "dropout",
    F.dropout2d: "dropout",
    F.dropout1d: "dropout",
    torch.dropout: "dropout",
    F.alpha_dropout: "dropout",
    F.feature_alpha_dropout: "dropout",
    torch.flatten: "reshape",
    torch.reshape: "reshape",
    torch.squeeze: "reshape",
    torch.unsqueeze: "reshape",
    torch.cat: "cat",
    torch.concat: "cat",
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    operator.sub: "add",
    operator.isub: "add",
    torch.sub: "add",
    operator.mul: "scale",
    operator.imul: "scale",
    torch.mul: "scale",
    operator.truediv: "scale",
    operator.itruediv: "scale",
    torch.div: "scale",
    operator.neg: "scale",
    torch.neg: "scale",
    torch.mean: "mean",
    F.linear: "linear",
    F.conv2d: "conv",
    torch.transpose: "permute",
    torch.permute: "permute",
    F.batch_norm: "batchnorm",
    torch.chunk: "split",
    torch.split: "split",
    operator.getitem: "narrow",
}
_FUNCTIONS.update({f: "nonlinear" for f in _NONLINEAR_FUNCTIONS})
_FUNCTIONS.update({f: "norm" for f in _NORM_FUNCTIONS})
if hasattr(torch, "concatenate"):
    _FUNCTIONS[torch.concatenate] = "cat"

_METHODS = {
    "relu": "relu",
    "relu_": "relu",
    "view": "reshape",
    "reshape": "reshape",
    "flatten": "reshape",
    "squeeze": "reshape",
    "unsqueeze": "reshape",
    "view_as": "reshape",
    "reshape_as": "reshape",
    "contiguous": "identity",
    "clone": "identity",
    "add": "add",
    "add_": "add",
    "sub": "add",
    "sub_": "add",
    "mul": "scale",
    "mul_": "scale",
    "div": "scale",
    "div_": "scale",
    "neg": "scale",
    "mean": "mean",
    "transpose": "permute",
    "permute": "permute",
    "sigmoid": "nonlinear",
    "sigmoid_": "nonlinear",
    "tanh": "nonlinear",
    "tanh_": "nonlinear",
    "chunk": "split",
    "split": "split",
}

_MODULES: Dict[type, str] = {
    nn.Conv2d: "conv",
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.MaxPool2d: "maxpool",
    nn.AdaptiveMaxPool2d: "adaptive_maxpool",
    nn.AvgPool2d: "avgpool",
    nn.AdaptiveAvgPool2d: "adaptive_avgpool",
    nn.BatchNorm2d: "batchnorm",
    nn.BatchNorm1d: "batchnorm",
    nn.Linear: "linear",
    nn.Flatten: "reshape",
    nn.Dropout: "dropout",
    nn.Dropout2d: "dropout",
    nn.Dropout1d: "dropout",
    nn.AlphaDropout: "dropout",
    nn.FeatureAlphaDropout: "dropout",
    nn.Identity: "identity",
    nn.LayerNorm: "norm",
    nn.GroupNorm: "norm",
    nn.InstanceNorm1d: "norm",
    nn.InstanceNorm2d: "norm",
}
_MODULES.update({m: "nonlinear" for m in _NONLINEAR_MODULES})
# torchvision's, by path: looked up only once torchvision is imported (trace.torchvision_class).
_TORCHVISION_MODULES: Dict[str, str] = {
    "ops.FrozenBatchNorm2d": "batchnorm",
    "ops.StochasticDepth": "dropout",
    "models.convnext.LayerNorm2d": "norm",
    "ops.SqueezeExcitation": "gate",
    "ops.Permute": "permute",
}


def _module_kind(m: nn.Module) -> Optional[str]:
    kind = _MODULES.get(type(m))
    if kind is None:
        for path, k in _TORCHVISION_MODULES.items():
            if type(m) is torchvision_class(path):
                return k
    return kind


def _bind(names, args, kwargs) -> Dict[str, Any]:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def _window_params(kind: str, p: Dict[str, Any]) -> Dict[str, Any]:
    k = _pair(p["kernel_size"])
    stride = p.get("stride")
    s = (
        k
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
        else _pair(stride)
    )
    return {
        "kernel": k,
        "stride": s,
        "padding": _pair(p.get("padding", 0)),
        "dilation": _pair(p.get("dilation", 1)),
        "ceil_mode": bool(p.get("ceil_mode", False)),
    }


def _conv_padding(padding, kernel, dilation) -> Tuple[Optional[Tuple[int, int]], str]:
    """Left/top padding of a conv (``'same'`` pads the extra pixel on the right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), ""
        if padding == "same":
            return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)), ""
        return None, f"padding={padding!r}"
    return _pair(padding), ""


def _unsupported(what: str, reason: str = "", module=None) -> OpSpec:
    return OpSpec("unsupported", what, module=module, reason=reason)


def _from_module(node: fx.Node, m: nn.Module) -> OpSpec:
    what = type(m).__name__
    kind = _module_kind(m)
    x = node.args[0] if node.args else None
    if kind is None or not isinstance(x, fx.Node):
        return _unsupported(what, module=m)
    if kind == "conv":
        if m.padding_mode != "zeros":
            return _unsupported(what, f"padding_mode={m.padding_mode!r} (zero padding only)", m)
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        pad, bad = _conv_padding(m.padding, k, d)
        if pad is None:
            return _unsupported(what, bad, m)
        params = {
            "kernel": k,
            "stride": _pair(m.stride),
            "padding": pad,
            "dilation": d,
            "groups": m.groups,
            "weight": ("module", "weight"),
        }
        return OpSpec("conv", what, (x,), params, m)
    if kind == "maxpool":
        if m.return_indices:
            return _unsupported(what, "return_indices=True", m)
        return OpSpec(kind, what, (x,), _window_params(kind, vars(m)), m)
    if kind == "avgpool":
        params = _window_params(kind, vars(m))
        params.update(
            count_include_pad=bool(m.count_include_pad), divisor_override=m.divisor_override
        )
        return OpSpec(kind, what, (x,), params, m)
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        if getattr(m, "return_indices", False):
            return _unsupported(what, "return_indices=True", m)
        return OpSpec(kind, what, (x,), {"output_size": m.output_size}, m)
    if kind == "batchnorm":
        if not is_torchvision(m, "ops.FrozenBatchNorm2d") and m.running_var is None:
            return _unsupported(
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


def _norm_function(node: fx.Node, kind: str, what: str, x: fx.Node) -> OpSpec:
    p = _bind(_SIGNATURES[kind], node.args, node.kwargs)
    w = p.get("weight")
    if w is not None and not (isinstance(w, fx.Node) and w.op == "get_attr"):
        return _unsupported(what, "a weight that is not a parameter of the model")
    eps = p.get("eps", 1e-5)
    if not _is_number(eps):
        return _unsupported(what, "a computed eps")
    params = {"weight": None if w is None else ("attr", w.target), "eps": float(eps)}
    if kind == "layer_norm":
        shape = p.get("normalized_shape")
        if not isinstance(shape, (list, tuple, torch.Size, int)) or any(
            isinstance(v, fx.Node) for v in (shape if isinstance(shape, (list, tuple)) else [shape])
        ):
            return _unsupported(what, "a computed normalized_shape")
        dims = 1 if isinstance(shape, int) else len(shape)
        params.update(stats="last", dims=dims)
    elif kind == "group_norm":
        if not isinstance(p.get("num_groups"), int):
            return _unsupported(what, "a computed num_groups")
        params.update(stats="groups", groups=p["num_groups"])
    else:
        if p.get("use_input_stats", True) is not True:
            return _unsupported(what, "running statistics in a functional instance_norm")
        params.update(stats="groups", groups=None)
    return OpSpec("norm", what, (x,), params)


def _batchnorm_function(node: fx.Node, what: str, x: fx.Node) -> OpSpec:
    """``F.batch_norm`` in eval (timm's ``BatchNormAct2d`` calls it): linear, its scale from
    the running variance, weight and eps."""
    p = _bind(_SIGNATURES["batch_norm"], node.args, node.kwargs)
    if p.get("training", False) is not False:
        return _unsupported(what, "batch norm with batch statistics (training=True)")
    nodes = {k: p.get(k) for k in ("running_var", "weight")}
    if nodes["running_var"] is None or any(
        v is not None and not (isinstance(v, fx.Node) and v.op == "get_attr")
        for v in nodes.values()
    ):
        return _unsupported(what, "statistics or weights that are not buffers of the model")
    eps = p.get("eps", 1e-5)
    if not _is_number(eps):
        return _unsupported(what, "a computed eps")
    return OpSpec(
        "batchnorm",
        what,
        (x,),
        {
            "running_var": nodes["running_var"].target,
            "eps": float(eps),
            "weight": None if nodes["weight"] is None else nodes["weight"].target,
        },
    )


def _gate_source(node: Any, root: nn.Module) -> Optional[fx.Node]:
    """The input of the sigmoid (or hard sigmoid) that ``node`` is, through reshapes; None
    when ``node`` is not a gate."""
    while (
        isinstance(node, fx.Node)
        and node.op in ("call_method", "call_function")
        and node.target in _RESHAPE_TARGETS
    ):
        node = node.args[0]
    if not isinstance(node, fx.Node) or not node.args:
        return None
    if node.op == "call_module":
        is_gate = isinstance(root.get_submodule(node.target), _GATE_TARGETS[:2])
    else:
        is_gate = (
            node.op in ("call_function", "call_method")
            and node.target in _GATE_TARGETS[2:]
            or node.target == "sigmoid_"
        )
    return node.args[0] if is_gate and isinstance(node.args[0], fx.Node) else None


def split_sizes(n: int, how: Tuple[str, Any]) -> List[int]:
    """The sizes ``torch.chunk`` (``("chunk", k)``) or ``torch.split`` (``("split", size or
    sections)``) cut a dimension of ``n`` into."""
    kind, v = how
    if kind == "chunk":
        step = -(-n // int(v))
    elif isinstance(v, int):
        step = v
    else:
        return [int(s) for s in v]
    return [min(step, n - a) for a in range(0, n, step)]


def _narrow(node: fx.Node, what: str, signal) -> OpSpec:
    """``pieces[i]`` of a ``chunk`` or ``split`` along one dimension."""
    source, index = (node.args + (None, None))[:2]
    if not (
        isinstance(source, fx.Node)
        and isinstance(index, int)
        and source.target in ("chunk", "split", torch.chunk, torch.split)
    ):
        return _unsupported(what, "indexing other than a piece of chunk() or split()")
    if source.target in ("chunk", torch.chunk):
        p = _bind(("input", "chunks", "dim"), source.args, source.kwargs)
        how = ("chunk", p.get("chunks"))
    else:
        p = _bind(_SIGNATURES["split"], source.args, source.kwargs)
        p["input"] = p.get("tensor")
        how = ("split", p.get("split_size_or_sections", p.get("split_size")))
    x, dim = p.get("input"), p.get("dim", 0)
    if (
        not (isinstance(x, fx.Node) and signal(x))
        or not isinstance(dim, int)
        or any(
            isinstance(v, fx.Node)
            for v in ([how[1]] if not isinstance(how[1], (list, tuple)) else how[1])
        )
    ):
        return _unsupported(what, "a piece of a computed split")
    return OpSpec("narrow", what, (x,), {"dim": dim, "index": index, "how": how})


def _arith(node: fx.Node, what: str, signal: Callable[[Any], bool], root: nn.Module) -> OpSpec:
    """add/sub (either operand may carry signal), mul/div/neg by a number or a constant
    tensor (layer scale), and gates: a signal times a sigmoid of another signal."""
    name = getattr(node.target, "__name__", str(node.target)).strip("_")
    if name in ("iadd", "isub", "imul", "itruediv"):
        name = name[1:]
    name = "div" if name == "truediv" else name
    args = list(node.args)
    if name == "neg":
        return OpSpec("scale", what, (args[0],), {"factor": -1.0})
    if len(args) == 1 and "other" in node.kwargs:
        args.append(node.kwargs["other"])
    alpha = node.kwargs.get("alpha", 1)
    if len(args) != 2 or not _is_number(alpha):
        return _unsupported(what, "arguments it cannot read")
    a, b = args
    sa, sb = signal(a), signal(b)
    if name in ("add", "sub"):
        # A constant operand (a number or a tensor that does not depend on the image)
        # is the affine part: its transpose gets no signal.
        sign = float(alpha) * (-1.0 if name == "sub" else 1.0)
        return OpSpec("add", what, (a if sa else None, b if sb else None), {"signs": (1.0, sign)})
    if sa and not sb and _is_number(b):
        return OpSpec("scale", what, (a,), {"factor": float(b) if name == "mul" else 1.0 / b})
    if sb and not sa and _is_number(a) and name == "mul":
        return OpSpec("scale", what, (b,), {"factor": float(a)})
    if sa and not sb and isinstance(b, fx.Node):
        return OpSpec("scale", what, (a,), {"factor": None, "tensor": b, "divide": name == "div"})
    if sb and not sa and isinstance(a, fx.Node) and name == "mul":
        return OpSpec("scale", what, (b,), {"factor": None, "tensor": a, "divide": False})
    if name == "mul" and sa and sb:
        for x, gate in ((a, b), (b, a)):
            source = _gate_source(gate, root)
            if source is None:
                continue
            if source is x:
                return _unsupported(
                    what, "a signal times its own sigmoid (SiLU written out; use nn.SiLU or F.silu)"
                )
            return OpSpec("gate", what, (x,), {"held": gate})
        return _unsupported(
            what,
            "a product of two signals that is not a gate (a sigmoid "
            "or hard sigmoid of another signal)",
        )
    return _unsupported(what, "a product or quotient of tensors (not linear in the image)")


def classify(node: fx.Node, root: nn.Module, signal: Callable[[Any], bool]) -> OpSpec:
    """The :class:`OpSpec` of one fx node of ``root``'s graph.

    ``signal(arg)`` says whether an argument carries the image's signal (a tensor
    that depends on the input); nodes with no such argument are ``constant``.
    Window ops get ``kernel``, ``stride``, ``padding`` (top/left), ``dilation``
    and ``ceil_mode`` as ``(h, w)`` pairs; ``conv``/``linear`` name their
    ``weight`` (``("module", "weight")`` or ``("attr", "path.to.weight")``);
    ``cat`` its ``dim``; ``mean`` its ``dim`` and ``keepdim``; ``permute`` its
    ``dims`` or ``dim0``/``dim1``; ``scale`` its ``factor``; ``add`` the
    ``signs`` of its operands.
    """
    if node.op == "placeholder":
        return OpSpec("input", "input")
    if node.op in ("get_attr", "output"):
        return OpSpec("constant", node.op)
    flat = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: flat.append(a) or a)
    if not any(signal(a) for a in flat):
        return OpSpec("constant", describe_target(node))
    if node.op == "call_module":
        return _from_module(node, root.get_submodule(node.target))
    if node.op == "call_function":
        kind = _FUNCTIONS.get(node.target)
    else:
        kind = _METHODS.get(node.target)
    what = describe_target(node)
    if kind is None:
        return _unsupported(what)
    if kind in ("add", "scale"):
        return _arith(node, what, signal, root)
    if kind == "narrow":
        return _narrow(node, what, signal)
    if kind == "split":
        return OpSpec("split", what)
    x = node.args[0] if node.args else node.kwargs.get("input")
    if kind == "cat":
        p = _bind(_SIGNATURES["cat"], node.args, node.kwargs)
        tensors = p.get("tensors")
        if not isinstance(tensors, (list, tuple)):
            return _unsupported(what, "a concatenation of a computed list")
        ins = tuple(t if signal(t) else None for t in tensors)
        if any(t is None for t in ins):
            return _unsupported(what, "a concatenation with a constant tensor")
        return OpSpec("cat", what, ins, {"dim": int(p.get("dim", 0))})
    if not isinstance(x, fx.Node) or not signal(x):
        return _unsupported(what, "signal in an argument other than the first")
    if kind in ("relu", "relu6", "reshape", "identity", "nonlinear"):
        return OpSpec(kind, what, (x,))
    if kind == "norm":
        return _norm_function(node, _NORM_FUNCTIONS[node.target], what, x)
    if kind == "batchnorm":
        return _batchnorm_function(node, what, x)
    if kind == "dropout":
        p = _bind(_SIGNATURES["dropout"], node.args, node.kwargs)
        if p.get("training", True) is not False:
            return _unsupported(what, "dropout that stays random in eval mode (training=True)")
        return OpSpec(kind, what, (x,))
    if kind in ("maxpool", "avgpool"):
        p = _bind(_SIGNATURES[kind], node.args, node.kwargs)
        consts = [v for k_, v in p.items() if k_ != "input"]
        if any(isinstance(v, fx.Node) for v in consts):
            return _unsupported(what, "a computed kernel size")
        if p.get("return_indices"):
            return _unsupported(what, "return_indices=True")
        params = _window_params(kind, p)
        if kind == "avgpool":
            params.update(
                count_include_pad=bool(p.get("count_include_pad", True)),
                divisor_override=p.get("divisor_override"),
            )
        return OpSpec(kind, what, (x,), params)
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        p = _bind(_SIGNATURES["adaptive"], node.args, node.kwargs)
        if isinstance(p.get("output_size"), fx.Node) or p.get("return_indices"):
            return _unsupported(what, "a computed output size or return_indices=True")
        return OpSpec(kind, what, (x,), {"output_size": p["output_size"]})
    if kind == "mean":
        p = _bind(_SIGNATURES["mean"], node.args, node.kwargs)
        if "dtype" in p:
            return _unsupported(what, "a dtype argument")
        dim = p.get("dim")
        dim = None if dim is None else tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
        return OpSpec(kind, what, (x,), {"dim": dim, "keepdim": bool(p.get("keepdim", False))})
    if kind == "permute":
        if node.target in ("transpose", torch.transpose):
            p = _bind(_SIGNATURES["transpose"], node.args, node.kwargs)
            return OpSpec(kind, what, (x,), {"dim0": p["dim0"], "dim1": p["dim1"]})
        dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        dims = node.kwargs.get("dims", dims)
        return OpSpec(kind, what, (x,), {"dims": tuple(int(d) for d in dims)})
    if kind in ("linear", "conv"):
        p = _bind(_SIGNATURES[kind], node.args, node.kwargs)
        w = p.get("weight")
        if not (isinstance(w, fx.Node) and w.op == "get_attr"):
            return _unsupported(what, "a weight that is not a parameter of the model")
        if kind == "linear":
            return OpSpec(kind, what, (x,), {"weight": ("attr", w.target)})
        k = None  # from the weight's shape, filled in by the graph
        pad, bad = _conv_padding(p.get("padding", 0), (1, 1), (1, 1))
        if isinstance(p.get("padding"), str) or pad is None:
            return _unsupported(what, "string padding in a functional conv")
        return OpSpec(
            kind,
            what,
            (x,),
            {
                "kernel": k,
                "stride": _pair(p.get("stride", 1)),
                "padding": pad,
                "dilation": _pair(p.get("dilation", 1)),
                "groups": int(p.get("groups", 1)),
                "weight": ("attr", w.target),
            },
        )
    return _unsupported(what)
