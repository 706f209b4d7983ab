"""A model's traced network, made once and handed down, and the layers a command names.

:func:`graph_of` traces a model once (per model, cached weakly) and analyses it at
an image size: a command calls it at its boundary and hands the
:class:`~deconvviz.engine.net.graph.Graph` down. Every layer a command names resolves
on that graph to a :class:`~deconvviz.engine.net.graph.NodeInfo`, whether it was given
as a node name
(``"layer2.1.relu_1"``) or, on a plain conv stack, as a block number (a name for
the node that ends the block). :func:`layer_key` is how reports and files name it:
as the user did.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import List, Optional, Sequence, Tuple, Union

from torch import nn

from ...errors import DeconvvizError, NotProjectable
from .graph import Graph, NodeInfo, build_graph

__all__ = [
    "Layer",
    "graph_of",
    "resolve_info",
    "resolve_infos",
    "layer_key",
    "spatial",
    "require_spatial",
]

Layer = Union[int, str]
_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, Graph]" = weakref.WeakKeyDictionary()


def graph_of(
    model: nn.Module,
    image_size: Tuple[int, int],
    in_channels: Optional[int] = None,
    graph: Optional[Graph] = None,
) -> Graph:
    """The model's traced :class:`Graph` at ``image_size`` ``(H, W)``: ``graph`` where the
    caller hands one down (checked to be ``model``'s), else traced once per model and
    input channels (``in_channels`` by default the first ``Conv2d``'s)."""
    if graph is not None:
        if graph.model is not model:
            raise DeconvvizError("the graph was built for another model")
        return graph.at_size(tuple(image_size))
    graph = _GRAPHS.get(model)
    if graph is None or in_channels is not None and graph.in_channels != in_channels:
        graph = build_graph(model, tuple(image_size), in_channels).held_weakly()
        _GRAPHS[model] = graph
    return graph.at_size(tuple(image_size))


def _number(layer: Layer) -> Optional[int]:
    if isinstance(layer, bool):
        return None
    if isinstance(layer, int):
        return layer
    if isinstance(layer, str) and layer.strip().isdigit():
        return int(layer)
    return None


def resolve_info(graph: Graph, layer: Layer) -> NodeInfo:
    """The :class:`NodeInfo` of a block number or node name on ``graph``, after checking that
    every op below it has a deconvnet rule. ``index`` is the block number where the layer
    was given as one, else None."""
    number = _number(layer)
    if number is not None and graph.layers:
        return graph.info(graph.check_seed(number).name)
    # A name that is all digits may be a node's name (an nn.Sequential's children).
    return dataclasses.replace(graph.info(graph.check_seed(layer).name), index=None)


def resolve_infos(graph: Graph, layers: Optional[Sequence[Layer]]) -> List[NodeInfo]:
    """Infos of ``layers`` (in the order given, duplicates dropped; block numbers sorted);
    by default every block of a plain stack, or every node worth projecting of any other
    network."""
    if not layers:
        if graph.layers:
            return [resolve_info(graph, i + 1) for i in range(len(graph.layers))]
        infos = [
            dataclasses.replace(i, index=None) for i in graph.infos() if not graph.why_not(i.name)
        ]
        if not infos:
            # name the op without a rule nearest the image that the listed nodes go back to
            blocks = [graph.blocker(n.name) for n in graph.listed()]
            first = min((b for b in blocks if b is not None), key=lambda b: b.index, default=None)
            why = (
                graph.why_not(first.name)
                if first is not None
                else "none of its nodes gives a feature map"
            )
            raise NotProjectable(
                f"{type(graph.model).__name__} has no node to project "
                f"(see 'deconvviz layers'): {why}"
            )
        return infos
    out, seen = [], set()
    for layer in layers:
        info = resolve_info(graph, layer)
        if layer_key(info) not in seen:
            seen.add(layer_key(info))
            out.append(info)
    if all(i.index is not None for i in out):
        out.sort(key=lambda i: i.index)
    return out


def spatial(graph: Graph, info: NodeInfo) -> bool:
    """Whether the layer's output has positions ``(C, H, W)`` (a logit or a flattened
    vector has one value per channel and no image patch of its own)."""
    return graph.node(info.name).spatial


def require_spatial(graph: Graph, info: NodeInfo) -> None:
    """One line for a layer without positions where image patches are asked for."""
    if not spatial(graph, info):
        raise DeconvvizError(
            f"{info.describe()} has no spatial output (one value per "
            "channel), so it has no image patches for a report; choose a node "
            "with a (C, H, W) output (see 'deconvviz layers'), or project it "
            f"with 'deconvviz project --layer {info.name}'"
        )


def layer_key(info: NodeInfo) -> Layer:
    """How reports and files name a layer: its block number where it was given as one,
    else its node name."""
    return info.index if info.index is not None else info.name
