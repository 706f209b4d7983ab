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
:mod:`.ops`), running it (:mod:`.run`), receptive fields and cones (:mod:`.geometry`).
"""

from __future__ import annotations

import difflib
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import fx, nn

from ...errors import DeconvvizError, NotProjectable
from .geometry import Frame, receptive_fields, seed_frames, window_frame
from .nodes import LISTED_OPS, RULE_OPS, SEED_OPS, GraphNode, NodeInfo, analyse
from .ops import REACH, WHOLE_IMAGE_OPS
from .run import op_weight
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


class Graph:
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
        self._frames: Dict[Tuple[str, bool], Optional[Dict[str, Frame]]] = {}
        self.nodes, self._depends = analyse(
            model, fx_graph, names, visible, self.input_size, self.in_channels
        )
        self._by_name = {n.name: n for n in self.nodes}
        self._by_fx = {n.fx_node: n for n in self.nodes}
        self._moved: Dict[str, Optional[Tuple[int, int]]] = {}
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

    def regrouped(self, name: str) -> bool:
        """Whether node ``name`` holds its map as the last two dims of a per-image shape
        ``(..., H, W)`` of more than three dims (a channel shuffle's ``(g, C/g, H, W)``
        between its views): its channels are regrouped, each position keeps its place."""
        shape = self._by_name[name].shape
        return (
            shape is not None
            and len(shape) > 3
            and self._moved.get(name) == (len(shape) - 2, len(shape) - 1)
        )

    def map_size(self, name: str, frame: Optional[Frame] = None) -> Tuple[int, int]:
        """``(channels, positions)`` of one image's output of node ``name`` on ``frame`` (the
        whole map by default): a channels-last ``(H, W, C)`` map's channels are its last
        dim, a regrouped ``(g, C/g, H, W)`` map's all but its last two (:meth:`regrouped`);
        a map without rows and columns is one position."""
        node = self._by_name[name]
        numel = int(torch.Size(node.shape).numel())
        rows = self._spatial(node)
        channels = numel // (rows[0] * rows[1]) if rows is not None else node.shape[0]
        if frame is None or frame.whole:
            return channels, numel // max(channels, 1)
        return channels, frame.area()

    def _spatial(self, node: GraphNode) -> Optional[Tuple[int, int]]:
        """The ``(rows, columns)`` of ``node``'s map, where a frame can cut it; else None."""
        if self.channels_last(node.name):
            return tuple(node.shape[:2])
        if node.spatial or self.regrouped(node.name):
            return tuple(node.shape[-2:])
        return None

    def _keeps_places(self, node: GraphNode, x: str) -> bool:
        """Whether ``node`` (a reshape, a permute or a piece of a chunk) only regroups or
        cuts the channels of its input ``x``: both hold their maps as their last two dims,
        of one size, and a piece is cut along another dim (channel shuffle:
        ``view(B, g, C/g, H, W)``, ``transpose(1, 2)``, ``view(B, C, H, W)``, ``chunk(2,
        dim=1)``). Row-major, each position's channels then stay at that position."""
        below = self._by_name[x]
        trailing = [
            n.spatial and n.name not in self._moved or self.regrouped(n.name) for n in (node, below)
        ]
        if not all(trailing) or tuple(node.shape[-2:]) != tuple(below.shape[-2:]):
            return False
        if node.op == "narrow":
            return 0 < node.params["dim"] % (len(below.shape) + 1) < len(below.shape) - 1
        return True

    def _reach(self, node: GraphNode, frame: Frame):
        """What ``frame`` of ``node``'s output reads of each input (see ``REACH``), or None."""
        kind = REACH.get(node.op)
        ins = [x for x in node.inputs if x is not None]
        if node.op in ("reshape", "permute", "narrow") and len(ins) == 1:
            if self._keeps_places(node, ins[0]):
                return [(ins[0], frame)]
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

    def frames(
        self,
        seed: str,
        whole: bool = False,
        block: Tuple[int, int] = (1, 1),
        hybrid: bool = False,
    ) -> Optional[Dict[str, Frame]]:
        """Per node under ``seed``, the window its seeds keep (the seed's cone, the union of
        the cones of a ``block`` of positions, or with ``whole`` every map whole; ``hybrid``:
        the whole map where the cone's window is as large, see
        :func:`~.geometry.seed_frames`); None where the cone does not exist (cached)."""
        key = (seed, bool(whole), tuple(block), bool(hybrid))
        if key not in self._frames:
            self._frames[key] = seed_frames(
                self.ancestors([seed]),
                seed,
                self._reach,
                whole,
                tuple(block),
                bool(hybrid),
                self._spatial,
            )
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
