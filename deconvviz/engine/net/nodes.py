"""The nodes of a traced network: what each one is, its shape, and what a seed on it can see.

:func:`analyse` classifies every node of a :mod:`torch.fx` trace
(:func:`~deconvviz.engine.net.classify.classify`) and runs one shape pass at an input
size, which gives each :class:`GraphNode`; a seedable node's size and receptive
field are described by a :class:`NodeInfo` (:meth:`Graph.info
<deconvviz.engine.net.graph.Graph.info>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from torch import fx, nn

from .classify import classify
from .geometry.fields import Geometry
from .ops import OPS, OpSpec
from .run import run_node
from .trace import eval_mode, one_line

__all__ = ["GraphNode", "NodeInfo", "analyse", "SEED_OPS", "LISTED_OPS", "RULE_OPS"]

#: Ops a seed may sit on (any node whose output is ``(B, C, H, W)`` or ``(B, C)``): every op
#: with a rule but the bookkeeping kinds and ``split``, whose output is a tuple of maps.
SEED_OPS = tuple(op for op in OPS if op not in ("input", "constant", "split", "unsupported"))
#: Ops listed by default (the nodes worth projecting); ``layers --all`` lists every node.
LISTED_OPS = (
    "conv",
    "relu",
    "relu6",
    "nonlinear",
    "gate",
    "maxpool",
    "adaptive_maxpool",
    "avgpool",
    "adaptive_avgpool",
    "add",
    "cat",
    "linear",
)
#: What the deconvnet goes back through, for messages.
RULE_OPS = (
    "Conv2d (any groups, stride, dilation, zero padding), ReLU, ReLU6 and elementwise "
    "nonlinearities (SiLU, GELU, Hardswish, Mish, ELU, LeakyReLU, PReLU, Softplus, "
    "Hardtanh, Sigmoid, Tanh; module, function or in-place), gates (x * sigmoid(s), "
    "x * hardsigmoid(s), SqueezeExcitation), LayerNorm/LayerNorm2d/GroupNorm/"
    "InstanceNorm (statistics held), max pools (unpooled), batch norm (eval), add, "
    "products with a constant (layer scale), cat, chunk/split, average and adaptive "
    "pools, flatten/view/reshape, permute, mean, Linear, dropout, identity"
)


@dataclass(frozen=True)
class GraphNode:
    """One traced node.

    ``name``: torchvision's node name; ``index``: position in execution order;
    ``op``: its kind (``conv``, ``relu``, ``maxpool``, ``add``, ``cat``,
    ``linear``, ..., ``input``, ``constant`` for nodes that carry no image
    signal, ``unsupported``); ``what``: the module class or function
    (``"Conv2d"``, ``"F.relu"``); ``inputs``: node names the op's transpose
    sends signal to, in its own order (``None`` for a constant operand);
    ``parents``: the distinct ones; ``hidden``: a step inside a torchvision
    sequence module (``Conv2dNormActivation``), named by its module path and not
    among torchvision's node names; ``shape``: the output shape of one image,
    ``(C, H, W)`` or ``(C,)`` (``None`` when not a tensor or when the node cannot
    run at this input size, ``error`` then says why); ``spec``: the op in normal
    form (:class:`~deconvviz.engine.net.ops.OpSpec`).
    """

    name: str
    index: int
    op: str
    what: str
    inputs: Tuple[Optional[str], ...]
    parents: Tuple[str, ...]
    shape: Optional[Tuple[int, ...]]
    spec: OpSpec = field(repr=False)
    fx_node: fx.Node = field(repr=False)
    error: str = ""
    hidden: bool = False

    @property
    def module(self) -> Optional[nn.Module]:
        return self.spec.module

    @property
    def params(self) -> Dict[str, Any]:
        return self.spec.params

    @property
    def spatial(self) -> bool:
        return self.shape is not None and len(self.shape) == 3

    @property
    def seedable(self) -> bool:
        return self.op in SEED_OPS and self.shape is not None and len(self.shape) in (1, 3)

    def label(self) -> str:
        return f"node '{self.name}' ({self.what})"


@dataclass(frozen=True)
class NodeInfo:
    """A seedable node's size and receptive field, shaped like
    :class:`~deconvviz.engine.net.layers.LayerInfo`.

    ``index``: the legacy layer number (``None`` for other nodes); ``features``:
    channels; ``output_size``: ``(h, w)`` (``(1, 1)`` for a ``(B, C)`` output);
    the receptive field of position ``(i, j)`` starts at
    ``(rf_start[0] + i * rf_jump[0], ...)`` and spans ``rf_size`` (unclipped, as
    :func:`~deconvviz.engine.net.geometry.patches.receptive_box` reads it). Where no such
    affine field exists (``exact`` False: uneven adaptive pools, merges of
    different strides), ``rf_jump`` is 0 and the window covers every position's
    box. :meth:`box` and :meth:`boxes` give each position's exact clipped box.
    """

    name: str
    op: str
    what: str
    index: Optional[int]
    path: str
    features: int
    output_size: Tuple[int, int]
    image_size: Tuple[int, int]
    rf_size: Tuple[int, int]
    rf_jump: Tuple[int, int]
    rf_start: Tuple[int, int]
    exact: bool
    geometry: Geometry = field(repr=False)

    def describe(self) -> str:
        if self.index is not None:
            return f"layer {self.index} ({self.name})"
        return f"node '{self.name}' ({self.what})"

    def box(self, position: Tuple[int, int]) -> Tuple[int, int, int, int]:
        """Exact input box ``(y0, x0, y1, x1)`` (end exclusive, clipped) of output ``position``."""
        return self.geometry.box(int(position[0]), int(position[1]))

    def boxes(self, positions: torch.Tensor) -> torch.Tensor:
        """Vectorised :meth:`box`: positions ``(..., 2)`` -> boxes ``(..., 4)`` int64."""
        pos = torch.as_tensor(positions, dtype=torch.int64)
        lo = [torch.tensor(v, dtype=torch.int64) for v in self.geometry.lo]
        hi = [torch.tensor(v, dtype=torch.int64) for v in self.geometry.hi]
        y0, y1 = lo[0][pos[..., 0]], hi[0][pos[..., 0]]
        x0, x1 = lo[1][pos[..., 1]], hi[1][pos[..., 1]]
        box = torch.stack([y0, x0, y1, x1], dim=-1)
        empty = ((y0 >= y1) | (x0 >= x1)).unsqueeze(-1)
        return box.masked_fill(empty, 0)


def analyse(
    model: nn.Module,
    fx_graph: fx.Graph,
    names: Dict[fx.Node, str],
    visible: Set[str],
    input_size: Tuple[int, int],
    in_channels: int,
) -> Tuple[Tuple[GraphNode, ...], Dict[fx.Node, bool]]:
    """Classify every node of a traced model and run one shape pass (batch 1, zeros) at
    ``input_size`` ``(H, W)``: ``(nodes in execution order, {fx node: carries the image's
    signal})``. ``names``/``visible``: from :func:`~deconvviz.engine.net.trace.trace`."""
    p = next(iter(model.parameters()), None)
    dtype, device = (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))
    x = torch.zeros((1, in_channels) + tuple(input_size), dtype=dtype, device=device)
    env: Dict[fx.Node, Any] = {}
    depends: Dict[fx.Node, bool] = {}
    failed: Dict[fx.Node, str] = {}
    out: List[GraphNode] = []
    placeholders = 0

    def signal(a) -> bool:
        if not isinstance(a, fx.Node):
            return False
        if a in failed:
            return depends.get(a, False)
        v = env.get(a)
        # chunk/split give a tuple of tensors, which their getitem nodes pick from
        return depends.get(a, False) and (
            isinstance(v, torch.Tensor)
            or isinstance(v, (tuple, list))
            and any(isinstance(t, torch.Tensor) for t in v)
        )

    with torch.no_grad(), eval_mode(model):
        for node in fx_graph.nodes:
            if node.op == "output":
                continue
            ins = node.all_input_nodes
            depends[node] = (
                node.op == "placeholder"
                and placeholders == 0
                or any(depends.get(a, False) for a in ins)
            )
            spec = classify(node, model, signal)
            error = next((failed[a] for a in ins if a in failed), "")
            if not error:
                try:
                    if node.op == "placeholder":
                        value = x if placeholders == 0 else (node.args[0] if node.args else None)
                        placeholders += 1
                    else:
                        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: env[a])
                        value = run_node(node, spec, model, args, kwargs)
                    env[node] = value
                except Exception as exc:
                    error = (
                        f"node '{names[node]}' fails on a {input_size[0]}x"
                        f"{input_size[1]} image ({one_line(exc)})"
                    )
            if error:
                failed[node] = error
            value = env.get(node)
            shape = tuple(value.shape[1:]) if isinstance(value, torch.Tensor) else None
            op = spec.op
            if op not in ("input", "constant") and not depends[node]:
                op = "constant"
            if not error and op != "constant" and not isinstance(value, torch.Tensor):
                # Sizes and other numbers carry no signal; a tuple of tensors (chunk,
                # split) would, and has no rule.
                carries = isinstance(value, (tuple, list)) and any(
                    isinstance(v, torch.Tensor) for v in value
                )
                # chunk/split's pieces go back through the nodes that pick them (narrow).
                op = op if op == "split" else "unsupported" if carries else "constant"
            inputs = tuple(names[a] if isinstance(a, fx.Node) else None for a in spec.inputs)
            parents = tuple(dict.fromkeys(n for n in inputs if n is not None))
            if op == "unsupported" and not parents:
                # No rule, so no transpose: its signal inputs still are what it depends
                # on, for the nodes above it (which 'layers' lists as blocked by it).
                parents = tuple(
                    dict.fromkeys(names[a] for a in ins if depends.get(a) and a in names)
                )
            out.append(
                GraphNode(
                    names[node],
                    len(out),
                    op,
                    spec.what,
                    inputs,
                    parents,
                    shape,
                    spec,
                    node,
                    error,
                    hidden=names[node] not in visible,
                )
            )
    return tuple(out), depends
