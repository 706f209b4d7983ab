"""Any CNN as a graph: its nodes, named as torchvision names them, with shapes and receptive fields.

:func:`build_graph` traces a model once with :mod:`torch.fx`, exactly as
torchvision's ``models.feature_extraction`` does (its ``NodePathTracer``, the
same leaf modules), so node names are the ones ``get_graph_node_names`` lists
and ``create_feature_extractor`` takes: ``features.28``, ``layer3.1.relu_1``,
``inception4a.branch2.1.conv``. Every use of a reused module and every
functional or in-place ReLU is its own node. One forward pass at the given
input size gives every node's output shape; the receptive field of every output
position follows (:mod:`.geometry`). The :class:`Graph` is made once at
the boundary and handed along.

**Block numbers.** Where the network is a plain conv stack
(``model.features`` or the model itself an ``nn.Sequential``; our CIFAR CNN,
AlexNet, VGG), integer layer ``L`` names the output of the L-th ``Conv2d``'s
block (after its ReLU and pooling, up to the next conv), exactly as
:mod:`.layers` numbers them, so ``layer=2`` keeps working.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import fx, nn

from ...errors import DeconvvizError, NotProjectable
from .geometry import Frame, Geometry, receptive_fields, seed_frames, window_frame
from .layers import conv_stack
from .ops import REACH, WHOLE_IMAGE_OPS, OpSpec, classify, op_weight, run_node, run_recorded
from .trace import eval_mode, one_line, trace

__all__ = [
    "GraphNode",
    "NodeInfo",
    "Graph",
    "build_graph",
    "eval_mode",
    "SEED_OPS",
    "LISTED_OPS",
    "RULE_OPS",
]

#: Ops a seed may sit on (any node whose output is ``(B, C, H, W)`` or ``(B, C)``).
SEED_OPS = (
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
    "mean",
    "linear",
    "dropout",
    "identity",
)
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
    :func:`~deconvviz.engine.net.geometry.receptive_box` reads it). Where no such
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


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _default_size(model: nn.Module) -> Tuple[int, int]:
    meta = getattr(model, "meta", None) or {}
    size = meta.get("input_size", (3, 224, 224))
    return int(size[-2]), int(size[-1])


class Graph:
    """A traced model at one input size: nodes, shapes, receptive fields, layer numbers.

    Build it with :func:`build_graph`. ``nodes``: every node in execution order
    (the model's return value is the last tensor node); ``input_size``:
    ``(H, W)``; ``in_channels``; ``layers``: node names of legacy layers 1, 2, ...
    (empty unless the model is a plain conv stack). The model is referenced, not
    copied: its current weights are used whenever the graph runs.
    """

    def __init__(
        self,
        model: nn.Module,
        fx_graph: fx.Graph,
        names: Dict[fx.Node, str],
        visible: set,
        input_size: Tuple[int, int],
        in_channels: int,
    ):
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_channels = int(in_channels)
        self._fx_graph, self._names, self._visible = fx_graph, names, visible
        self._sizes: Dict[Tuple[int, int], "Graph"] = {self.input_size: self}
        self._frames: Dict[Tuple[str, bool], Optional[Dict[str, Frame]]] = {}
        self.nodes: Tuple[GraphNode, ...] = self._analyse()
        self._by_name = {n.name: n for n in self.nodes}
        self._by_fx = {n.fx_node: n for n in self.nodes}
        self._moved: Dict[str, Optional[Tuple[int, int]]] = {}
        self._blockers: Optional[Dict[str, Optional[GraphNode]]] = None
        self._geometry = receptive_fields(self.nodes, self.input_size, self._kernel, self._moved)
        self.layers: Tuple[str, ...] = self._legacy_layers()

    # ------------------------------------------------------------------ analysis
    def _param_dtype(self):
        p = next(iter(self.model.parameters()), None)
        return (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))

    def _analyse(self) -> Tuple[GraphNode, ...]:
        """Classify every node and run one shape pass (batch 1, zeros) at ``input_size``."""
        dtype, device = self._param_dtype()
        x = torch.zeros((1, self.in_channels) + self.input_size, dtype=dtype, device=device)
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

        self._depends = depends
        with torch.no_grad(), eval_mode(self.model):
            for node in self._fx_graph.nodes:
                if node.op == "output":
                    continue
                ins = node.all_input_nodes
                depends[node] = (
                    node.op == "placeholder"
                    and placeholders == 0
                    or any(depends.get(a, False) for a in ins)
                )
                spec = classify(node, self.model, signal)
                error = next((failed[a] for a in ins if a in failed), "")
                if not error:
                    try:
                        if node.op == "placeholder":
                            value = (
                                x if placeholders == 0 else (node.args[0] if node.args else None)
                            )
                            placeholders += 1
                        else:
                            args, kwargs = fx.node.map_arg(
                                (node.args, node.kwargs), lambda a: env[a]
                            )
                            value = run_node(node, spec, self.model, args, kwargs)
                        env[node] = value
                    except Exception as exc:
                        error = (
                            f"node '{self._names[node]}' fails on a {self.input_size[0]}x"
                            f"{self.input_size[1]} image ({one_line(exc)})"
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
                inputs = tuple(
                    self._names[a] if isinstance(a, fx.Node) else None for a in spec.inputs
                )
                parents = tuple(dict.fromkeys(n for n in inputs if n is not None))
                if op == "unsupported" and not parents:
                    # No rule, so no transpose: its signal inputs still are what it depends
                    # on, for the nodes above it (which 'layers' lists as blocked by it).
                    parents = tuple(
                        dict.fromkeys(
                            self._names[a] for a in ins if depends.get(a) and a in self._names
                        )
                    )
                out.append(
                    GraphNode(
                        self._names[node],
                        len(out),
                        op,
                        spec.what,
                        inputs,
                        parents,
                        shape,
                        spec,
                        node,
                        error,
                        hidden=self._names[node] not in self._visible,
                    )
                )
        return tuple(out)

    def _kernel(self, node: GraphNode) -> Tuple[int, int]:
        return node.params["kernel"] or tuple(op_weight(node.spec, self.model).shape[-2:])

    def window_params(self, node: GraphNode):
        """``(kernel, stride, padding, dilation)`` pairs of a conv or pool (an adaptive pool
        whose input is a multiple of its output is a pool of that window), else None."""
        if REACH.get(node.op) == "window":
            p = node.params
            return self._kernel(node), p["stride"], p["padding"], p["dilation"]
        if REACH.get(node.op) == "adaptive":
            n_in = self._by_name[node.inputs[0]].shape[1:]
            n_out = node.shape[1:]
            if len(n_in) == 2 and all(i % o == 0 for i, o in zip(n_in, n_out)):
                k = tuple(i // o for i, o in zip(n_in, n_out))
                return k, k, (0, 0), (1, 1)
        return None

    def channels_last(self, name: str) -> bool:
        """Whether node ``name`` holds its map as ``(H, W, C)`` per image (inside a ConvNeXt
        block, between its permutes): its records are cut to a window on dims 1 and 2."""
        return self._moved.get(name) == (0, 1) and len(self._by_name[name].shape) == 3

    def _reach(self, node: GraphNode, frame: Frame):
        """What ``frame`` of ``node``'s output reads of each input (see ``REACH``), or None."""
        kind = REACH.get(node.op)
        ins = [x for x in node.inputs if x is not None]
        if node.op in ("permute", "linear") and node.spatial:
            # A permute into a channels-last block and back, a Linear on its channels: the
            # same rows and columns, in other dims.
            (x,) = ins
            moves = self._moved.get(node.name, (1, 2)), self._moved.get(x, (1, 2))
            if any(m not in ((1, 2), (0, 1)) for m in moves) or not self._by_name[x].spatial:
                return None
            if node.op == "linear" and not self.channels_last(node.name):
                return None
            return [(x, frame)]
        if kind == "pointwise":
            if node.op == "cat" and node.params["dim"] % 4 != 1:
                return None
            held = node.params.get("held")  # a gate's value: held, it takes no signal
            for a in node.fx_node.all_input_nodes:
                if a is held:
                    continue
                name = self._names.get(a)
                shape = self._by_name[name].shape if name in self._by_name else None
                if name in ins and (shape is None or tuple(shape[1:]) != tuple(node.shape[1:])):
                    return None  # a broadcast signal reads other positions than its own
                if name not in ins and (
                    self._depends.get(a)
                    or (shape is not None and len(shape) >= 2 and shape[-1] * shape[-2] > 1)
                ):
                    return None  # a size read off the image, or a map that does not move
            return [(x, frame) for x in ins]
        window = self.window_params(node) if kind else None
        if window is None:
            return None
        return [(ins[0], window_frame(frame, *window))]

    def frames(self, seed: str, whole: bool = False) -> Optional[Dict[str, Frame]]:
        """Per node under ``seed``, the window its seeds keep (the seed's cone, or with
        ``whole`` every map whole); None where the cone does not exist (cached)."""
        key = (seed, bool(whole))
        if key not in self._frames:
            self._frames[key] = seed_frames(self.ancestors([seed]), seed, self._reach, whole)
        return self._frames[key]

    def holds_whole_image(self, name: str) -> bool:
        """Whether node ``name`` holds a value that depends on the whole image: a gate's (a
        global average inside it), a normalisation's per-image statistics (GroupNorm,
        InstanceNorm, a LayerNorm over rows or columns). A LayerNorm over the channels at
        each position (torchvision's LayerNorm2d, ConvNeXt's LayerNorm on its channels-last
        block) is pointwise: its statistics are those of its own position."""
        n = self._by_name[name]
        if n.op not in WHOLE_IMAGE_OPS:
            return False
        p = n.params
        if n.op == "norm" and p["stats"] == "channels":
            return not (n.spatial and name not in self._moved)
        if n.op == "norm" and p["stats"] == "last" and p["dims"] == 1:
            return not self.channels_last(name)
        return True

    def whole_image_state(self, seed: str) -> Optional[GraphNode]:
        """The first node under ``seed`` that :meth:`holds_whole_image`, or None: a seed's
        cone recording takes that node's value (and everything below it) from a whole-image
        pass of each image, the rest inside the cone."""
        return next((n for n in self.ancestors([seed]) if self.holds_whole_image(n.name)), None)

    def _legacy_layers(self) -> Tuple[str, ...]:
        try:
            stack = conv_stack(self.model)
        except DeconvvizError:
            return ()
        prefix = "features." if stack is not self.model else ""
        calls: Dict[str, List[GraphNode]] = {}
        for n in self.nodes:
            if n.fx_node.op == "call_module":
                calls.setdefault(n.fx_node.target, []).append(n)
        chain = []
        for i in range(len(stack)):
            found = calls.get(f"{prefix}{i}", [])
            if len(found) != 1:
                return ()
            chain.append(found[0])
        for a, b in zip(chain, chain[1:]):
            if b.parents != (a.name,):
                return ()
        convs = [i for i, n in enumerate(chain) if isinstance(n.module, nn.Conv2d)]
        layers = []
        for k, ci in enumerate(convs):
            end = convs[k + 1] if k + 1 < len(convs) else len(chain)
            last = ci
            while last + 1 < end and chain[last + 1].spatial:
                last += 1
            layers.append(chain[last].name)
        return tuple(layers)

    # ------------------------------------------------------------------ lookup
    def at_size(self, size: Tuple[int, int]) -> "Graph":
        """The same traced model analysed at another input size ``(H, W)`` (cached)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._sizes:
            g = Graph(
                self.model, self._fx_graph, self._names, self._visible, size, self.in_channels
            )
            g._sizes = self._sizes
            self._sizes[size] = g
        return self._sizes[size]

    def names(self) -> List[str]:
        """Every node name in execution order, as ``get_graph_node_names(model)[1]`` lists them
        (nodes opened up inside torchvision's sequence modules are not listed)."""
        return [n.name for n in self.nodes if not n.hidden]

    def node(self, layer: Union[int, str]) -> GraphNode:
        """The node a layer number or node name refers to; a one-line error otherwise."""
        if isinstance(layer, str) and layer in self._by_name:
            return self._by_name[layer]
        if isinstance(layer, str) and layer.strip().isdigit():
            layer = int(layer)
        if isinstance(layer, int) and not isinstance(layer, bool):
            model = type(self.model).__name__
            if not self.layers:
                example = next((n.name for n in self.nodes if n.op in ("relu", "conv")), "")
                raise DeconvvizError(
                    f"layer {layer}: numbered layers exist only for a plain "
                    f"conv stack, which {model} is not; name a node instead, "
                    f"e.g. '{example}' (see 'deconvviz layers')"
                )
            if not 1 <= layer <= len(self.layers):
                raise DeconvvizError(
                    f"layer {layer} is out of range: this network has layers "
                    f"1..{len(self.layers)} (see 'deconvviz layers')"
                )
            return self._by_name[self.layers[layer - 1]]
        if not isinstance(layer, str):
            raise DeconvvizError(f"a layer is a number or a node name; got {layer!r}")
        close = difflib.get_close_matches(layer, self.names(), n=5, cutoff=0.6)
        hint = f"closest: {', '.join(close)}" if close else f"{len(self.nodes)} nodes"
        raise DeconvvizError(
            f"no node named {layer!r} in {type(self.model).__name__} ({hint}; "
            "see 'deconvviz layers --all')"
        )

    def output_name(self) -> Optional[str]:
        """The node the model returns (None when it returns something else than one node)."""
        out = next((n for n in self._fx_graph.nodes if n.op == "output"), None)
        arg = out.args[0] if out is not None and out.args else None
        return self._names.get(arg) if isinstance(arg, fx.Node) else None

    def node_of(self, fx_node: fx.Node) -> GraphNode:
        """The :class:`GraphNode` of a traced fx node."""
        return self._by_fx[fx_node]

    def name_of(self, fx_node: fx.Node) -> Optional[str]:
        """The node name of a traced fx node."""
        return self._names.get(fx_node)

    def layer_index(self, name: str) -> Optional[int]:
        """The legacy layer number of node ``name``, or None."""
        return self.layers.index(name) + 1 if name in self.layers else None

    def ancestors(self, names: Iterable[str]) -> List[GraphNode]:
        """The nodes that carry signal into ``names`` (included), in execution order."""
        seen, todo = set(), list(names)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self._by_name[n].parents)
        return [n for n in self.nodes if n.name in seen]

    def blocker(self, layer: Union[int, str]) -> Optional[GraphNode]:
        """The first node on the way back from ``layer`` to the image whose op has no
        deconvnet rule (``layer``'s own node first; through branches, the one run last),
        or None when the reverse pass has a rule for every op it meets."""
        if self._blockers is None:
            found: Dict[str, Optional[GraphNode]] = {}
            for n in self.nodes:  # execution order: parents come first
                below = [found[p] for p in n.parents if found.get(p) is not None]
                found[n.name] = (
                    n if n.op == "unsupported" else max(below, key=lambda b: b.index, default=None)
                )
            self._blockers = found
        return self._blockers[self.node(layer).name]

    def why_not(self, layer: Union[int, str], short: bool = False) -> str:
        """Why no seed can sit on ``layer``, in one line ("" when one can): the node fails
        at this input size, an op on the way back has no deconvnet rule
        (:meth:`blocker`), or its output is no ``(C, H, W)`` or ``(C,)``. ``short``: a
        few words for a table (``deconvviz layers``)."""
        node = self.node(layer)
        if node.error:
            return (
                f"fails on a {self.input_size[0]}x{self.input_size[1]} image"
                if short
                else node.error
            )
        block = self.blocker(node.name)
        if block is not None:
            reason = block.spec.reason
            if short:
                if block is not node:
                    return f"no rule for {block.what} at {block.name} on the way back"
                return f"no rule for {block.what}{f': {reason}' if reason else ''}"
            where = "" if block is node else f", so '{node.name}' cannot be projected through it"
            return (
                f"{block.label()}{f', {reason},' if reason else ''} has no deconvnet "
                f"rule{where} (rules exist for: {RULE_OPS})"
            )
        if not node.seedable or node.name in self._moved:
            shape = "no tensor" if node.shape is None else f"shape {tuple(node.shape)}"
            moved = (
                " with its map in other dims (channels-last)" if node.name in self._moved else ""
            )
            if short:
                return {"input": "the input image", "constant": "carries no image signal"}.get(
                    node.op, f"gives {shape}{moved}"
                )
            return (
                f"{node.label()} gives {shape} per image{moved}; a seed needs a (C, H, W) "
                "or (C,) output"
            )
        return ""

    def check_seed(self, layer: Union[int, str]) -> GraphNode:
        """The node a seed sits on, after checking every op below it has a deconvnet rule;
        :class:`~deconvviz.errors.NotProjectable` (one line, :meth:`why_not`) otherwise."""
        node = self.node(layer)
        reason = self.why_not(node.name)
        if reason:
            raise NotProjectable(reason)
        return node

    def info(self, layer: Union[int, str]) -> NodeInfo:
        """The :class:`NodeInfo` (channels, output size, receptive field) of a node."""
        node = self.node(layer)
        if node.error:
            raise DeconvvizError(node.error)
        geo = self._geometry.get(node.name)
        if geo is None or not node.seedable or node.name in self._moved:
            raise DeconvvizError(f"{node.label()} has no spatial or channel output to describe")
        affine = geo.affine
        if all(a is not None for a in affine):
            start, jump, size = zip(*affine)
        else:
            (y0, y1), (x0, x1) = geo.hull()
            start, jump, size = (y0, x0), (0, 0), (max(0, y1 - y0), max(0, x1 - x0))
        fx_node = node.fx_node
        return NodeInfo(
            name=node.name,
            op=node.op,
            what=node.what,
            index=self.layer_index(node.name),
            path=fx_node.target if fx_node.op == "call_module" else node.name,
            features=int(node.shape[0]),
            output_size=geo.size,
            image_size=self.input_size,
            rf_size=tuple(size),
            rf_jump=tuple(jump),
            rf_start=tuple(start),
            exact=all(a is not None for a in affine),
            geometry=geo,
        )

    def listed(self, all_nodes: bool = False) -> List[GraphNode]:
        """The nodes ``deconvviz layers`` lists, in execution order: every node
        (``all_nodes``), or those worth projecting (visible nodes of :data:`LISTED_OPS`,
        legacy layers) and the visible ops without a rule that stand where they would."""
        return [
            n
            for n in self.nodes
            if all_nodes
            or n.name in self.layers
            or not n.hidden
            and (n.op in LISTED_OPS or n.op == "unsupported" and n.shape is not None)
        ]

    def infos(self, all_nodes: bool = False) -> List[NodeInfo]:
        """:class:`NodeInfo` of every seedable node of :meth:`listed` that runs at this
        size."""
        return [
            self.info(n.name)
            for n in self.listed(all_nodes)
            if n.seedable and not n.error and n.name in self._geometry and n.name not in self._moved
        ]

    # ------------------------------------------------------------------ running
    def execute(
        self,
        x: torch.Tensor,
        targets: Sequence[str],
        visit: Optional[Callable[[GraphNode, torch.Tensor, Optional[torch.Tensor]], None]] = None,
        switches: bool = False,
        slopes: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Run only the nodes ``targets`` need, on ``x`` ``(B, C, H, W)``; return their outputs.

        ``visit(node, value, kept)`` sees every signal node's output as it is
        made; with ``switches=True``, ``kept`` is what the op's rule needs
        (:func:`~deconvviz.engine.net.ops.run_recorded`: a max pool's argmax indices,
        a gate's value, a normalisation's factor, with ``slopes`` a nonlinearity's
        slope), else None. Values are freed after their last use. Call it inside
        :func:`eval_mode` and ``torch.no_grad()``.
        """
        wanted = set(targets)
        needed, todo = set(), [self._by_name[t].fx_node for t in targets]
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.add(n)
                todo.extend(n.all_input_nodes)
        order = [n for n in self.nodes if n.fx_node in needed]
        last_use: Dict[fx.Node, int] = {}
        for i, n in enumerate(order):
            for a in n.fx_node.all_input_nodes:
                last_use[a] = i
        env: Dict[fx.Node, Any] = {}
        first_placeholder = True
        result: Dict[str, torch.Tensor] = {}
        for i, n in enumerate(order):
            fxn, idx = n.fx_node, None
            if fxn.op == "placeholder":
                value = x if first_placeholder else (fxn.args[0] if fxn.args else None)
                first_placeholder = False
            else:
                args, kwargs = fx.node.map_arg((fxn.args, fxn.kwargs), lambda a: env[a])
                if switches:
                    value, idx = run_recorded(fxn, n.spec, self.model, args, kwargs, slopes)
                else:
                    value = run_node(fxn, n.spec, self.model, args, kwargs)
            env[fxn] = value
            if visit is not None and n.op not in ("constant",) and isinstance(value, torch.Tensor):
                visit(n, value, idx)
            if n.name in wanted:
                result[n.name] = value
            for a in fxn.all_input_nodes:
                if last_use.get(a) == i:
                    env.pop(a, None)
        return result


def build_graph(
    model: nn.Module,
    input_size: Optional[Tuple[int, int]] = None,
    in_channels: Optional[int] = None,
) -> Graph:
    """Trace ``model`` with torch.fx and analyse it at ``input_size`` ``(H, W)``.

    ``input_size`` defaults to the checkpoint metadata's (``model.meta``), else
    224x224; ``in_channels`` to the first ``Conv2d``'s. The model is traced in
    eval mode and left exactly as found. A model torch.fx cannot trace raises a
    one-line :class:`~deconvviz.errors.DeconvvizError`; nodes that cannot run at
    this size (an image smaller than the network needs, a head built for another
    size) are kept with their ``error`` and refused only when asked for.
    """
    if not isinstance(model, nn.Module):
        raise DeconvvizError(f"expected an nn.Module; got {type(model).__name__}")
    size = _default_size(model) if input_size is None else tuple(input_size)[-2:]
    channels = _first_conv_channels(model) if in_channels is None else in_channels
    fx_graph, names, visible = trace(model)
    return Graph(model, fx_graph, names, visible, size, channels)
