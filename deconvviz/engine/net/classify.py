"""What each traced node of a network does: its op kind and parameters.

A node of the :mod:`torch.fx` graph is a module call (``call_module``), a function
(``call_function``) or a tensor method (``call_method``). :func:`classify` names
its **op** (the kind the deconvnet has a rule for, :data:`~.ops.OPS`) and its parameters in
one normal form (:class:`~.ops.OpSpec`), whether the network wrote ``nn.MaxPool2d``,
``F.max_pool2d`` or ``torch.max_pool2d`` (:mod:`.targets`); a module call's op comes from the
module (:mod:`.module_calls`). Running a node is :mod:`.run`'s job.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import fx, nn

from .module_calls import classify_module, conv_padding, pool_params, unsupported
from .ops import OpSpec
from .targets import (
    FUNCTIONS,
    GATE_TARGETS,
    METHODS,
    NORM_FUNCTIONS,
    RESHAPE_TARGETS,
    SIGNATURES,
    as_pair,
    bind_args,
    describe_target,
    is_number,
)

__all__ = ["classify"]


def _norm_function(node: fx.Node, kind: str, what: str, x: fx.Node) -> OpSpec:
    p = bind_args(SIGNATURES[kind], node.args, node.kwargs)
    w = p.get("weight")
    if w is not None and not (isinstance(w, fx.Node) and w.op == "get_attr"):
        return unsupported(what, "a weight that is not a parameter of the model")
    eps = p.get("eps", 1e-5)
    if not is_number(eps):
        return unsupported(what, "a computed eps")
    params = {"weight": None if w is None else ("attr", w.target), "eps": float(eps)}
    if kind == "layer_norm":
        shape = p.get("normalized_shape")
        if not isinstance(shape, (list, tuple, torch.Size, int)) or any(
            isinstance(v, fx.Node) for v in (shape if isinstance(shape, (list, tuple)) else [shape])
        ):
            return unsupported(what, "a computed normalized_shape")
        dims = 1 if isinstance(shape, int) else len(shape)
        params.update(stats="last", dims=dims)
    elif kind == "group_norm":
        if not isinstance(p.get("num_groups"), int):
            return unsupported(what, "a computed num_groups")
        params.update(stats="groups", groups=p["num_groups"])
    else:
        if p.get("use_input_stats", True) is not True:
            return unsupported(what, "running statistics in a functional instance_norm")
        params.update(stats="groups", groups=None)
    return OpSpec("norm", what, (x,), params)


def _batchnorm_function(node: fx.Node, what: str, x: fx.Node) -> OpSpec:
    """``F.batch_norm`` in eval (timm's ``BatchNormAct2d`` calls it): linear, its scale from
    the running variance, weight and eps."""
    p = bind_args(SIGNATURES["batch_norm"], node.args, node.kwargs)
    if p.get("training", False) is not False:
        return unsupported(what, "batch norm with batch statistics (training=True)")
    nodes = {k: p.get(k) for k in ("running_var", "weight")}
    if nodes["running_var"] is None or any(
        v is not None and not (isinstance(v, fx.Node) and v.op == "get_attr")
        for v in nodes.values()
    ):
        return unsupported(what, "statistics or weights that are not buffers of the model")
    eps = p.get("eps", 1e-5)
    if not is_number(eps):
        return unsupported(what, "a computed eps")
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
        and node.target in RESHAPE_TARGETS
    ):
        node = node.args[0]
    if not isinstance(node, fx.Node) or not node.args:
        return None
    if node.op == "call_module":
        is_gate = isinstance(root.get_submodule(node.target), GATE_TARGETS[:2])
    else:
        is_gate = (
            node.op in ("call_function", "call_method")
            and node.target in GATE_TARGETS[2:]
            or node.target == "sigmoid_"
        )
    return node.args[0] if is_gate and isinstance(node.args[0], fx.Node) else None


def _narrow(node: fx.Node, what: str, signal) -> OpSpec:
    """``pieces[i]`` of a ``chunk`` or ``split`` along one dimension."""
    source, index = (node.args + (None, None))[:2]
    if not (
        isinstance(source, fx.Node)
        and isinstance(index, int)
        and source.target in ("chunk", "split", torch.chunk, torch.split)
    ):
        return unsupported(what, "indexing other than a piece of chunk() or split()")
    if source.target in ("chunk", torch.chunk):
        p = bind_args(("input", "chunks", "dim"), source.args, source.kwargs)
        how = ("chunk", p.get("chunks"))
    else:
        p = bind_args(SIGNATURES["split"], source.args, source.kwargs)
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
        return unsupported(what, "a piece of a computed split")
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
    if len(args) != 2 or not is_number(alpha):
        return unsupported(what, "arguments it cannot read")
    a, b = args
    sa, sb = signal(a), signal(b)
    if name in ("add", "sub"):
        # A constant operand (a number or a tensor that does not depend on the image)
        # is the affine part: its transpose gets no signal.
        sign = float(alpha) * (-1.0 if name == "sub" else 1.0)
        return OpSpec("add", what, (a if sa else None, b if sb else None), {"signs": (1.0, sign)})
    if sa and not sb and is_number(b):
        return OpSpec("scale", what, (a,), {"factor": float(b) if name == "mul" else 1.0 / b})
    if sb and not sa and is_number(a) and name == "mul":
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
                return unsupported(
                    what, "a signal times its own sigmoid (SiLU written out; use nn.SiLU or F.silu)"
                )
            return OpSpec("gate", what, (x,), {"held": gate})
        return unsupported(
            what,
            "a product of two signals that is not a gate (a sigmoid "
            "or hard sigmoid of another signal)",
        )
    return unsupported(what, "a product or quotient of tensors (not linear in the image)")


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
        return classify_module(node, root.get_submodule(node.target))
    if node.op == "call_function":
        kind = FUNCTIONS.get(node.target)
    else:
        kind = METHODS.get(node.target)
    what = describe_target(node)
    if kind is None:
        return unsupported(what)
    if kind in ("add", "scale"):
        return _arith(node, what, signal, root)
    if kind == "narrow":
        return _narrow(node, what, signal)
    if kind == "split":
        return OpSpec("split", what)
    x = node.args[0] if node.args else node.kwargs.get("input")
    if kind == "cat":
        p = bind_args(SIGNATURES["cat"], node.args, node.kwargs)
        tensors = p.get("tensors")
        if not isinstance(tensors, (list, tuple)):
            return unsupported(what, "a concatenation of a computed list")
        ins = tuple(t if signal(t) else None for t in tensors)
        if any(t is None for t in ins):
            return unsupported(what, "a concatenation with a constant tensor")
        return OpSpec("cat", what, ins, {"dim": int(p.get("dim", 0))})
    if not isinstance(x, fx.Node) or not signal(x):
        return unsupported(what, "signal in an argument other than the first")
    if kind in ("relu", "relu6", "reshape", "identity", "nonlinear"):
        return OpSpec(kind, what, (x,))
    if kind == "norm":
        return _norm_function(node, NORM_FUNCTIONS[node.target], what, x)
    if kind == "batchnorm":
        return _batchnorm_function(node, what, x)
    if kind == "dropout":
        p = bind_args(SIGNATURES["dropout"], node.args, node.kwargs)
        if p.get("training", True) is not False:
            return unsupported(what, "dropout that stays random in eval mode (training=True)")
        return OpSpec(kind, what, (x,))
    if kind in ("maxpool", "avgpool"):
        p = bind_args(SIGNATURES[kind], node.args, node.kwargs)
        consts = [v for k_, v in p.items() if k_ != "input"]
        if any(isinstance(v, fx.Node) for v in consts):
            return unsupported(what, "a computed kernel size")
        if p.get("return_indices"):
            return unsupported(what, "return_indices=True")
        params = pool_params(kind, p)
        if kind == "avgpool":
            params.update(
                count_include_pad=bool(p.get("count_include_pad", True)),
                divisor_override=p.get("divisor_override"),
            )
        return OpSpec(kind, what, (x,), params)
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        p = bind_args(SIGNATURES["adaptive"], node.args, node.kwargs)
        if isinstance(p.get("output_size"), fx.Node) or p.get("return_indices"):
            return unsupported(what, "a computed output size or return_indices=True")
        return OpSpec(kind, what, (x,), {"output_size": p["output_size"]})
    if kind == "mean":
        p = bind_args(SIGNATURES["mean"], node.args, node.kwargs)
        if "dtype" in p:
            return unsupported(what, "a dtype argument")
        dim = p.get("dim")
        dim = None if dim is None else tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
        return OpSpec(kind, what, (x,), {"dim": dim, "keepdim": bool(p.get("keepdim", False))})
    if kind == "permute":
        if node.target in ("transpose", torch.transpose):
            p = bind_args(SIGNATURES["transpose"], node.args, node.kwargs)
            return OpSpec(kind, what, (x,), {"dim0": p["dim0"], "dim1": p["dim1"]})
        dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        dims = node.kwargs.get("dims", dims)
        return OpSpec(kind, what, (x,), {"dims": tuple(int(d) for d in dims)})
    if kind in ("linear", "conv"):
        p = bind_args(SIGNATURES[kind], node.args, node.kwargs)
        w = p.get("weight")
        if not (isinstance(w, fx.Node) and w.op == "get_attr"):
            return unsupported(what, "a weight that is not a parameter of the model")
        if kind == "linear":
            return OpSpec(kind, what, (x,), {"weight": ("attr", w.target)})
        k = None  # from the weight's shape, filled in by the graph
        pad, bad = conv_padding(p.get("padding", 0), (1, 1), (1, 1))
        if isinstance(p.get("padding"), str) or pad is None:
            return unsupported(what, "string padding in a functional conv")
        return OpSpec(
            kind,
            what,
            (x,),
            {
                "kernel": k,
                "stride": as_pair(p.get("stride", 1)),
                "padding": pad,
                "dilation": as_pair(p.get("dilation", 1)),
                "groups": int(p.get("groups", 1)),
                "weight": ("attr", w.target),
            },
        )
    return unsupported(what)
