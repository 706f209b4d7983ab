"""Running a traced network's nodes: :func:`execute` runs only what a set of targets
needs, frees each value after its last use, folds a batch norm into the conv before it
where no max pool follows, and with ``reuse`` lets a ReLU overwrite its input where
nothing else reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import fx, nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from .run import bn_scale, plain_module, run_node, run_recorded
from .trace import torchvision_class

if TYPE_CHECKING:
    from .graph import Graph
    from .nodes import GraphNode

__all__ = ["execute"]


def _foldable(conv: "GraphNode", bn: "GraphNode") -> bool:
    """A plain ``Conv2d`` whose only consumer is a plain eval batch norm with running
    statistics: the pair is one affine map, one convolution with the norm folded in."""
    c, b = conv.module, bn.module
    return (
        bn.op == "batchnorm"
        and plain_module(c, nn.Conv2d)
        and c.padding_mode == "zeros"
        and (
            plain_module(b, nn.BatchNorm2d)
            or plain_module(b, torchvision_class("ops.FrozenBatchNorm2d"))
        )
        and not b.training
        and getattr(b, "running_var", None) is not None
        and getattr(b, "running_mean", None) is not None
        and not _global_forward_hooks
        and not _global_forward_pre_hooks
    )


def _folded_conv(
    conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor, folds: Dict[nn.Module, tuple]
) -> torch.Tensor:
    """``bn(conv(x))`` as one convolution: weight ``w * s``, bias ``(b - mean) * s + beta``,
    ``s = gamma / sqrt(var + eps)`` (made once per ``folds``, one recording's store)."""
    if bn not in folds:
        w, b, beta, mean = (
            t.detach().to(x) if t is not None else None
            for t in (conv.weight, conv.bias, bn.bias, bn.running_mean)
        )
        scale = bn_scale(bn).detach().to(x)
        bias = (b - mean if b is not None else -mean) * scale
        bias = bias + beta if beta is not None else bias
        weight = (w * scale.view(-1, 1, 1, 1)).contiguous(memory_format=torch.channels_last)
        folds[bn] = (weight, bias)
    return conv._conv_forward(x, *folds[bn])


def execute(
    graph: "Graph",
    x: torch.Tensor,
    targets: Sequence[str],
    visit: Optional[Callable[["GraphNode", torch.Tensor, Optional[torch.Tensor]], None]] = None,
    switches: bool = False,
    slopes: bool = False,
    reuse: bool = False,
    folds: Optional[Dict[nn.Module, tuple]] = None,
) -> Dict[str, torch.Tensor]:
    """Run only the nodes ``targets`` need, on ``x`` ``(B, C, H, W)``; return their outputs.

    ``visit(node, value, kept)`` sees every signal node's output as it is
    made; with ``switches=True``, ``kept`` is what the op's rule needs
    (:func:`run_recorded`: a max pool's argmax indices,
    a gate's value, a normalisation's factor, with ``slopes`` a nonlinearity's
    slope), else None. Values are freed after their last use. With ``reuse`` (and
    without ``switches``) a ReLU overwrites its input where nothing else reads it
    and it is no target, as the network's own ``ReLU(inplace=True)`` does (same
    values, no fresh block per batch): ``visit`` must then be done with a value when
    it returns. Call it inside :func:`~deconvviz.engine.net.trace.eval_mode` and
    ``torch.no_grad()``.

    A plain ``Conv2d`` whose only consumer is a plain eval batch norm, and that is not a
    target and has no max pool after it, runs with the norm folded in (one pass over the
    map instead of two, the same affine map up to rounding, so every max pool sees the
    values the network computes); ``visit`` does not see its output, only the norm's. The
    folded weights are kept in ``folds`` (pass one dict to the passes of one recording, so
    they are made once; the default, a fresh one).
    """
    folds = {} if folds is None else folds
    wanted = set(targets)
    needed, todo = set(), [graph.node(t).fx_node for t in targets]
    while todo:
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(n.all_input_nodes)
    order = [n for n in graph.nodes if n.fx_node in needed]
    # Nodes with a max pool after them: folding rounds differently, and a max pool could
    # then break a float32 near-tie the other way (another switch, a visible difference).
    pooled: set = set()
    for n in reversed(order):
        if n.op in ("maxpool", "adaptive_maxpool") or any(u in pooled for u in n.fx_node.users):
            pooled.add(n.fx_node)
    # Batch norms folded into their conv: {norm's fx node: (conv module, conv's input)}.
    folded: Dict[fx.Node, Tuple[nn.Module, fx.Node]] = {}
    skipped = set()  # the convs folded in
    for n in order:
        users = list(n.fx_node.users)
        if (
            n.op == "conv"
            and n.fx_node.op == "call_module"
            and n.name not in wanted
            and n.fx_node not in pooled
            and len(users) == 1
            and users[0].op == "call_module"
            and len(n.fx_node.all_input_nodes) == 1
            and _foldable(n, graph.node_of(users[0]))
        ):
            folded[users[0]] = (n.module, n.fx_node.all_input_nodes[0])
            skipped.add(n.fx_node)
    last_use: Dict[fx.Node, int] = {}
    for i, n in enumerate(order):
        inputs = n.fx_node.all_input_nodes
        if n.fx_node in folded:
            inputs = [folded[n.fx_node][1]]
        elif n.fx_node in skipped:
            inputs = []
        for a in inputs:
            last_use[a] = i
    in_place = _in_place_relus(order, wanted) if reuse and not switches else set()
    env: Dict[fx.Node, Any] = {}
    first_placeholder = True
    result: Dict[str, torch.Tensor] = {}
    for i, n in enumerate(order):
        fxn, idx = n.fx_node, None
        if fxn in skipped:
            continue  # a conv folded into its batch norm
        if fxn.op == "placeholder":
            value = x if first_placeholder else (fxn.args[0] if fxn.args else None)
            first_placeholder = False
        elif fxn in folded:
            conv, x_in = folded[fxn]
            value = _folded_conv(conv, n.module, env[x_in], folds)
        else:
            args, kwargs = fx.node.map_arg((fxn.args, fxn.kwargs), lambda a: env[a])
            if i in in_place:
                value = torch.relu_(args[0] if args else kwargs["input"])
            elif switches:
                value, idx = run_recorded(fxn, n.spec, graph.model, args, kwargs, slopes)
            else:
                value = run_node(fxn, n.spec, graph.model, args, kwargs)
        env[fxn] = value
        if visit is not None and n.op not in ("constant",) and isinstance(value, torch.Tensor):
            visit(n, value, idx)
        if n.name in wanted:
            result[n.name] = value
        for a in [folded[fxn][1]] if fxn in folded else fxn.all_input_nodes:
            if last_use.get(a) == i:
                env.pop(a, None)
    return result


# Ops whose output is a fresh tensor (never a view of their input, a parameter or the image).
_FRESH_OPS = frozenset(
    {"conv", "linear", "batchnorm", "maxpool", "avgpool", "adaptive_maxpool", "adaptive_avgpool"}
)


def _in_place_relus(order: Sequence["GraphNode"], wanted) -> set:
    """Positions in ``order`` of the ReLUs that may overwrite their input: it is made fresh by
    its node, read by nothing else (so no view of it exists either) and no target."""
    made = {n.fx_node: n for n in order}
    out = set()
    for i, n in enumerate(order):
        inputs = n.fx_node.all_input_nodes
        if n.op != "relu" or len(inputs) != 1:
            continue
        src = made.get(inputs[0])
        if src is not None and src.op in _FRESH_OPS and src.name not in wanted:
            if len(src.fx_node.users) == 1:
                out.add(i)
    return out
