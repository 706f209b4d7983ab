"""The numbered layers of a plain conv stack, read off the traced graph.

**Layer L** is the L-th ``Conv2d`` of the model's conv stack (``model.features``,
or the model itself when it is an ``nn.Sequential``), counting from 1 as in Zeiler
& Fergus; its *block* runs from that conv up to the next one (:mod:`.stack`).
Features are channel indices within a layer, counting from 0. A layer's sizes and
receptive field are those of the graph node that ends its block
(:meth:`Graph.info <deconvviz.engine.net.graph.Graph.info>`, computed in
:mod:`.geometry`): one computation for every network and every way of naming a
layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import nn

from ...errors import DeconvvizError
from .graph import Graph
from .network import graph_of
from .stack import conv_stack

__all__ = ["LayerInfo", "conv_stack", "stack_graph", "list_layers", "get_layer"]


@dataclass(frozen=True)
class LayerInfo:
    """One conv layer: its number, where its block sits, and its geometry.

    ``path``: the conv's module path; ``start``/``end`` index the block in the conv
    stack (``stack[start:end]``); ``input_size``/``output_size``: the block input's and
    output's (h, w); the receptive field of output unit (i, j) starts at input pixel
    ``(rf_start[0] + i * rf_jump[0], ...)`` and spans ``rf_size`` pixels (before
    clipping at the image border); ``name``: the graph node that ends the block (what
    ``layer=L`` names).
    """

    index: int
    path: str
    start: int
    end: int
    in_channels: int
    features: int
    input_size: Tuple[int, int]
    output_size: Tuple[int, int]
    rf_size: Tuple[int, int]
    rf_jump: Tuple[int, int]
    rf_start: Tuple[int, int]
    image_size: Tuple[int, int]
    name: str = ""

    def describe(self) -> str:
        return f"layer {self.index} ({self.path})"


def stack_graph(
    model: nn.Module,
    input_size: Optional[Tuple[int, int]] = None,
    graph: Optional[Graph] = None,
) -> Graph:
    """The traced graph of a plain conv stack at ``input_size`` (by default the checkpoint
    metadata's, or 32x32), whose ``blocks`` are its numbered layers; ``graph``: the
    model's graph where the caller holds it. A one-line error where the model has no
    numbered layers."""
    if graph is None:
        if input_size is None:
            meta = getattr(model, "meta", None) or {}
            input_size = tuple(meta.get("input_size", (3, 32, 32))[-2:])
        graph = graph_of(model, (int(input_size[0]), int(input_size[1])))
    elif input_size is not None:
        graph = graph.at_size(input_size)
    if not graph.blocks:
        stack = conv_stack(model)  # a model without a stack: say so
        if not any(isinstance(m, nn.Conv2d) for m in stack):
            raise DeconvvizError("the model's conv stack has no Conv2d layer")
        raise DeconvvizError(
            f"{type(model).__name__}'s conv stack does not run as a chain of its modules, "
            "so it has no numbered layers; name a node instead (see 'deconvviz layers')"
        )
    return graph


def list_layers(
    model: nn.Module, input_size: Optional[Tuple[int, int]] = None, graph: Optional[Graph] = None
) -> List[LayerInfo]:
    """Every conv layer of the model's stack, numbered from 1.

    ``input_size`` is the image (h, w); by default it comes from the model's
    checkpoint metadata, or 32x32. ``graph``: the model's traced
    :class:`~deconvviz.engine.net.graph.Graph` where the caller holds it (else it is
    traced once per model). A network that is not a plain conv stack has no
    numbered layers (one-line :class:`~deconvviz.errors.DeconvvizError`); its nodes
    are named instead.
    """
    graph = stack_graph(model, input_size, graph)
    layers, size = [], graph.input_size
    for L, block in enumerate(graph.blocks, start=1):
        info = graph.info(block.name)
        conv = graph.node(block.conv).module
        assert isinstance(conv, nn.Conv2d)  # a block starts at its conv
        layers.append(
            LayerInfo(
                index=L,
                path=str(graph.node(block.conv).fx_node.target),
                start=block.start,
                end=block.end,
                in_channels=conv.in_channels,
                features=info.features,
                input_size=size,
                output_size=info.output_size,
                rf_size=info.rf_size,
                rf_jump=info.rf_jump,
                rf_start=info.rf_start,
                image_size=graph.input_size,
                name=block.name,
            )
        )
        size = info.output_size
    return layers


def get_layer(
    model: nn.Module,
    layer: int,
    input_size: Optional[Tuple[int, int]] = None,
    graph: Optional[Graph] = None,
) -> LayerInfo:
    """The :class:`LayerInfo` of layer ``layer`` (from 1), with a clear error when out of range."""
    layers = list_layers(model, input_size, graph)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= len(layers):
        raise DeconvvizError(
            f"layer {layer} is out of range: this network has layers "
            f"1..{len(layers)} (see 'deconvviz layers')"
        )
    return layers[layer - 1]
