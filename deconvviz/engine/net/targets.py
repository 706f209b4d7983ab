"""Which functions, tensor methods and modules each op kind covers, and their signatures.

A traced network names an op many ways (``nn.MaxPool2d``, ``F.max_pool2d``,
``torch.max_pool2d``; ``x.view``, ``torch.reshape``): these tables map each to one kind of
:data:`~deconvviz.engine.net.ops.OPS`, which :func:`~deconvviz.engine.net.classify.classify`
reads. A new way to write a known op is one line here.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .trace import torchvision_class

__all__ = [
    "describe_target",
    "module_kind",
    "bind_args",
    "as_pair",
    "is_number",
    "SIGNATURES",
    "FUNCTIONS",
    "METHODS",
    "MODULES",
    "NORM_FUNCTIONS",
    "GATE_TARGETS",
    "RESHAPE_TARGETS",
]


def as_pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def is_number(v) -> bool:
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
SIGNATURES = {
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
GATE_TARGETS = (nn.Sigmoid, nn.Hardsigmoid, torch.sigmoid, F.sigmoid, F.hardsigmoid, "sigmoid")
RESHAPE_TARGETS = (
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
NORM_FUNCTIONS = {
    F.layer_norm: "layer_norm",
    F.group_norm: "group_norm",
    F.instance_norm: "instance_norm",
}

FUNCTIONS: Dict[Callable, str] = {
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
FUNCTIONS.update({f: "nonlinear" for f in _NONLINEAR_FUNCTIONS})
FUNCTIONS.update({f: "norm" for f in NORM_FUNCTIONS})
if hasattr(torch, "concatenate"):
    FUNCTIONS[torch.concatenate] = "cat"

METHODS = {
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

MODULES: Dict[type, str] = {
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
MODULES.update({m: "nonlinear" for m in _NONLINEAR_MODULES})
# torchvision's, by path: looked up only once torchvision is imported (trace.torchvision_class).
_TORCHVISION_MODULES: Dict[str, str] = {
    "ops.FrozenBatchNorm2d": "batchnorm",
    "ops.StochasticDepth": "dropout",
    "models.convnext.LayerNorm2d": "norm",
    "ops.SqueezeExcitation": "gate",
    "ops.Permute": "permute",
}


def module_kind(m: nn.Module) -> Optional[str]:
    kind = MODULES.get(type(m))
    if kind is None:
        for path, k in _TORCHVISION_MODULES.items():
            if type(m) is torchvision_class(path):
                return k
    return kind


def bind_args(names, args, kwargs) -> Dict[str, Any]:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound
