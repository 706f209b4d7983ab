"""Any CNN as a graph: its nodes, named as torchvision names them, with shapes and receptive fields.

:func:`build_graph` traces a model once with :mod:`torch.fx`, exactly as
torchvision's ``models.feature_extraction`` does (its ``NodePathTracer``'s naming,
the same leaf modules: :mod:`.trace`), so node names are the ones ``get_graph_node_names`` lists
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
:mod:`.stack` finds them, so ``layer=2`` keeps working; :mod:`.layers` lists them.
The graph's pieces live beside it: each node's kind and shape (:mod:`.nodes`,
:mod:`.ops`), running it (:mod:`.run`), receptive fields (:mod:`.geometry`) and the cones
:class:`Graph` follows (:mod:`.maps`).
"""

from __future__ import annotations

import difflib
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from torch import fx, nn

from ...errors import DeconvvizError, NotProjectable
from .geometry.fields import receptive_fields
from .maps import Maps
from .nodes import LISTED_OPS, RULE_OPS, SEED_OPS, GraphNode, NodeInfo, analyse
from .stack import Block, stack_blocks
from .trace import eval_mode, trace

# GraphNode, NodeInfo and the op lists are the graph's vocabulary: importable from here.
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


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _default_size(model: nn.Module) -> Tuple[int, int]:
    meta = getattr(model, "meta", None) or {}
    size = meta.get("input_size", (3, 224, 224))
    return int(size[-2]), int(size[-1])


class Graph(Maps):
    """A traced model at one input size: nodes, shapes, receptive fields, layer numbers.

    Build it with :func:`build_graph`. ``nodes``: every node in execution order
    (the model's return value is the last tensor node); ``input_size``:
    ``(H, W)``; ``in_channels``; ``layers``: node names of legacy layers 1, 2, ...
    (empty unless the model is a plain conv stack); ``blocks``: their
    :class:`~deconvviz.engine.net.stack.Block` s. The model is referenced, not
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
        self._model: Any = model  # or a weak reference (see :meth:`held_weakly`)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_channels = int(in_channels)
        self._fx_graph, self._names, self._visible = fx_graph, names, visible
        self._sizes: Dict[Tuple[int, int], "Graph"] = {self.input_size: self}
        self._frames = {}
        self.nodes, self._depends = analyse(
            model, fx_graph, names, visible, self.input_size, self.in_channels
        )
        self._by_name = {n.name: n for n in self.nodes}
        self._by_fx = {n.fx_node: n for n in self.nodes}
        self._moved = {}
        self._blockers: Optional[Dict[str, Optional[GraphNode]]] = None
        self._geometry = receptive_fields(self.nodes, self.input_size, self._kernel, self._moved)
        self.blocks: Tuple[Block, ...] = stack_blocks(model, self.nodes)
        self.layers: Tuple[str, ...] = tuple(b.name for b in self.blocks)

    @property
    def model(self) -> nn.Module:
        """The traced model (referenced, not copied)."""
        model = self._model() if isinstance(self._model, weakref.ref) else self._model
        if model is None:
            raise DeconvvizError("the graph's model no longer exists")
        return model

    def held_weakly(self) -> "Graph":
        """This graph, and its analyses at other sizes, holding the model by a weak reference
        (a cache keyed by the model must not keep it alive)."""
        ref = weakref.ref(self.model)
        for g in self._sizes.values():
            g._model = ref
        return self

    # ------------------------------------------------------------------ lookup
    def at_size(self, size: Tuple[int, int]) -> "Graph":
        """The same traced model analysed at another input size ``(H, W)`` (cached)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._sizes:
            g = Graph(
                self.model, self._fx_graph, self._names, self._visible, size, self.in_channels
            )
            g._sizes, g._model = self._sizes, self._model
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
