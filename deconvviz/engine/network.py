"""Which engine serves a layer: the sequential deconvnet or the graph of any CNN.

A plain conv stack (``model.features`` of Conv2d, ReLU and MaxPool2d: the bundled
CNN, AlexNet, VGG) asked for by layer number runs on the sequential engine
(:mod:`.layers`, :mod:`.deconvnet`, with its receptive-field-windowed fast
path); every other model or node runs on the torch.fx graph
(:mod:`.graph`, :mod:`.graph_deconv`). Both give equal projections (proved
against autograd in the tests); this module only chooses, so callers ask for
``layer`` (a number or a node name) and get an info object with the same
fields either way (:class:`~.layers.LayerInfo` or :class:`~.graph.NodeInfo`).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

from torch import nn

from ..errors import DeconvvizError, NotProjectable
from .layers import LayerInfo, check_supported, conv_stack, get_layer, list_layers

# The graph engine (torch.fx, torchvision) is imported when a network first needs it:
# importing torchvision costs over a second, which a plain conv stack never pays.
if TYPE_CHECKING:
    from .graph import Graph, NodeInfo

__all__ = ["Layer", "is_plain", "graph_of", "resolve_info", "resolve_infos", "layer_key",
           "uses_graph", "spatial", "require_spatial"]

Layer = Union[int, str]
_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, Graph]" = weakref.WeakKeyDictionary()


def is_plain(model: nn.Module) -> bool:
    """Whether the sequential engine serves ``model`` (a plain, supported conv stack)."""
    try:
        conv_stack(model)
        check_supported(model)
    except DeconvvizError:
        return False
    return True


def graph_of(model: nn.Module, image_size: Tuple[int, int]) -> "Graph":
    """The model's traced :class:`Graph` at ``image_size`` (traced once per model)."""
    from .graph import build_graph

    graph = _GRAPHS.get(model)
    if graph is None:
        graph = build_graph(model, tuple(image_size))
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


def resolve_info(model: nn.Module, layer: Layer, image_size: Tuple[int, int]
                 ) -> Union[LayerInfo, "NodeInfo"]:
    """The layer's info: a :class:`LayerInfo` for a numbered layer of a plain stack, else
    the graph's :class:`NodeInfo` after checking every op below it has a rule."""
    number = _number(layer)
    if number is not None and is_plain(model):
        return get_layer(model, number, tuple(image_size))
    graph = graph_of(model, image_size)   # a name that is all digits may be a node's name
    graph.check_seed(layer)
    return graph.info(layer)


def resolve_infos(model: nn.Module, layers: Optional[Sequence[Layer]],
                  image_size: Tuple[int, int]) -> List[Union[LayerInfo, "NodeInfo"]]:
    """Infos of ``layers`` (in the order given, duplicates dropped); by default every conv
    layer of a plain stack, or every node worth projecting of any other network."""
    if not layers:
        if is_plain(model):
            infos = list_layers(model, tuple(image_size))
            if not infos:
                raise DeconvvizError("the model's conv stack has no Conv2d layer")
            return infos
        graph = graph_of(model, image_size)
        infos = [i for i in graph.infos() if not graph.why_not(i.name)]
        if not infos:
            # name the op without a rule nearest the image that the listed nodes go back to
            blocks = [graph.blocker(n.name) for n in graph.listed()]
            first = min((b for b in blocks if b is not None), key=lambda b: b.index,
                        default=None)
            why = graph.why_not(first.name) if first is not None else \
                "none of its nodes gives a feature map"
            raise NotProjectable(f"{type(model).__name__} has no node to project (see "
                                 f"'deconvviz layers'): {why}")
        return infos
    out, seen = [], set()
    for layer in layers:
        info = resolve_info(model, layer, image_size)
        if layer_key(info) not in seen:
            seen.add(layer_key(info))
            out.append(info)
    if all(isinstance(i, LayerInfo) for i in out):
        out.sort(key=lambda i: i.index)
    return out


def spatial(model: nn.Module, info) -> bool:
    """Whether the layer's output has positions ``(C, H, W)`` (a logit or a flattened
    vector has one value per channel and no image patch of its own)."""
    if isinstance(info, LayerInfo):
        return True
    return len(graph_of(model, info.image_size).node(info.name).shape or ()) == 3


def require_spatial(model: nn.Module, info) -> None:
    """One line for a layer without positions where image patches are asked for."""
    if not spatial(model, info):
        raise DeconvvizError(f"{info.describe()} has no spatial output (one value per "
                             "channel), so it has no image patches for a report; choose a node "
                             "with a (C, H, W) output (see 'deconvviz layers'), or project it "
                             f"with 'deconvviz project --layer {info.name}'")


def layer_key(info: Union[LayerInfo, "NodeInfo"]) -> Layer:
    """How reports and files name a layer: its number on the sequential engine, else the
    node name."""
    return info.index if isinstance(info, LayerInfo) else info.name


def uses_graph(info) -> bool:
    return not isinstance(info, LayerInfo)
