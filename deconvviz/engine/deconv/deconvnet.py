"""The deconvnet on any traced CNN: record the forward pass, seed, walk the graph back.

Zeiler & Fergus (arXiv 1311.2901) on any network
:func:`~deconvviz.engine.net.graph.build_graph` can trace: the bundled CNN, AlexNet,
VGG (with batch norm), ResNets, GoogLeNet, DenseNet, MobileNet, SqueezeNet, your
own. A layer is a torchvision node name (``"layer3.1.relu_1"``) or, on a plain
conv stack, a block number, which is only a name for a node.

A seed at one position depends on the image only inside its cone
(:meth:`~deconvviz.engine.net.graph.Graph.frames`), so each node's seeds take the
cheapest of three ways, chosen by multiply-adds (:func:`~.plan.plan`):

* ``record="cone"``: each seed records the forward pass inside its cone only
  (:func:`~deconvviz.engine.deconv.cone.record_cone`; seeds at known positions
  where there are more images than the cones cost, e.g. shallow nodes of large
  images);
* ``record="whole"``: each distinct image is recorded once, as far as the node
  needs (:func:`~deconvviz.engine.deconv.record.record_whole`). A cone recording
  takes what holds a value of the whole image (a gate, a normalisation with per-image
  statistics, and everything below it) from one whole pass of each image
  (:func:`~deconvviz.engine.deconv.cone.whole_part`);
* ``walk="cone"`` or ``"whole"``: the reverse pass inside each seed's cone, or
  over whole maps (where the cone covers the image, for ``mode="map"``, and
  where no cone exists: a logit, a flatten below the seed).

Every way gives the same projections (proved against autograd in float64).
Seeds go in chunks under one memory budget (:data:`~.plan.MAX_BYTES`); the chunks are
:mod:`.projecting`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ...errors import DeconvvizError
from ..net.execute import execute
from ..net.graph import Graph, eval_mode
from ..net.network import Layer, graph_of
from .plan import MAX_BYTES, cone_groups, plan
from .projecting import project_positions, project_recorded
from .projection import (
    MODES,
    RULES,
    UNPOOLS,
    Projection,
    check_choice,
    check_seeds,
)
from .record import GraphRecording, channels_last, record_whole

__all__ = [
    "RULES",
    "UNPOOLS",
    "MODES",
    "Projection",
    "Seeds",
    "record_graph",
    "node_outputs",
    "deconvolve",
    "deconvolve_many",
    "project",
    "graph_for",
]


@dataclass
class Seeds:
    """Many seeds on one node: seed ``s`` is channel ``feature[s]`` of image ``image_index[s]``.

    ``layer``: node name or block number; ``feature``: int or ``(S,)``;
    ``image_index``: ``(S,)`` (default: one seed per image, ``feature``
    broadcast); ``position``: ``(S, 2)`` or one ``(row, col)`` for
    ``mode="position"``.
    """

    layer: Layer
    feature: Union[int, Sequence[int], torch.Tensor]
    image_index: Optional[Union[Sequence[int], torch.Tensor]] = None
    position: Optional[Union[Sequence[int], torch.Tensor]] = None


def graph_for(model: nn.Module, images: torch.Tensor, graph: Optional[Graph] = None) -> Graph:
    """``graph`` (or ``model``'s, traced once: :func:`~deconvviz.engine.net.network.graph_of`)
    analysed at the images' size, after checks."""
    if images.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    size = (int(images.shape[-2]), int(images.shape[-1]))
    graph = graph_of(model, size, None if graph is not None else images.shape[1], graph)
    if images.shape[1] != graph.in_channels:
        raise DeconvvizError(
            f"images have {images.shape[1]} channels; the network takes {graph.in_channels}"
        )
    return graph


# ----------------------------------------------------------------------------- recording


def record_graph(
    graph: Graph, images: torch.Tensor, nodes: Sequence[Layer], masks: bool = True
) -> GraphRecording:
    """One whole forward pass of ``images`` ``(B, C, H, W)``, only as far as ``nodes`` need
    (see :func:`~deconvviz.engine.deconv.record.record_whole`), after checking each node."""
    return record_whole(graph, images, [graph.check_seed(n).name for n in nodes], masks)


def node_outputs(
    graph: Graph, images: torch.Tensor, nodes: Sequence[Layer]
) -> Dict[str, torch.Tensor]:
    """The outputs ``{name: (B, ...)}`` of ``nodes`` on ``images``, running only what they need.

    A plain forward pass (no switches, no masks) for scanning activations, e.g.
    the top-k search; eval mode, no gradients, the model left as found.
    """
    names = [graph.node(n).name for n in nodes]
    for name in names:
        if graph.node(name).error:
            raise DeconvvizError(graph.node(name).error)
    with torch.no_grad(), eval_mode(graph.model):
        return execute(graph, channels_last(images), names)


def _check(graph: Graph, images: torch.Tensor, seeds: Seeds, mode: str):
    """Validated ``(node, image_index, feature, position)`` of one :class:`Seeds`."""
    node = graph.check_seed(seeds.layer)
    info = graph.info(node.name)
    what = f"layer {seeds.layer}" if isinstance(seeds.layer, int) else f"node '{node.name}'"
    idx, feat, pos = check_seeds(
        seeds.feature,
        seeds.image_index,
        seeds.position,
        mode,
        int(images.shape[0]),
        info.features,
        info.output_size,
        what,
    )
    return node, idx, feat, pos


def deconvolve_many(
    model: nn.Module,
    images: torch.Tensor,
    seeds: Sequence[Seeds],
    *,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    graph: Optional[Graph] = None,
    max_bytes: int = MAX_BYTES,
) -> List[Projection]:
    """Project seeds on several nodes, each the cheapest way (:func:`~.plan.plan`).

    ``images``: model input ``(B, C, H, W)``; ``seeds``: one :class:`Seeds` per
    node. Nodes whose seeds read whole recordings share **one** forward pass of
    the images they use, as far as the deepest of them needs; seeds at known
    positions of shallow nodes record their cones instead. Returns one
    :class:`~deconvviz.engine.deconv.projection.Projection` per :class:`Seeds`, in order
    (``projections`` ``(S, C, H, W)`` in the model's input space, raw and signed;
    ``layer`` as given).
    """
    check_choice("mode", mode, MODES)
    check_choice("rule", rule, RULES)
    check_choice("unpool", unpool, UNPOOLS)
    graph = graph_for(model, images, graph)
    checked = [_check(graph, images, s, mode) for s in seeds]
    masks = rule != "deconvnet"
    plans, grouped = [], []
    for node, idx, _, pos in checked:
        groups, cost = cone_groups(graph, node, idx, pos) if mode == "position" else (None, None)
        plans.append(plan(graph, node.name, mode, idx.numel(), torch.unique(idx).numel(), cost))
        grouped.append(groups)
    whole = [c for c, p in zip(checked, plans) if p.record == "whole"]
    rec = None
    if whole:
        used = torch.unique(torch.cat([c[1] for c in whole]))
        rec = record_whole(graph, images[used.to(images.device)], [c[0].name for c in whole], masks)
    results = []
    with torch.no_grad():
        for s, (node, idx, feat, pos), how, groups in zip(seeds, checked, plans, grouped):
            if how.record == "cone":
                proj, act = project_positions(
                    graph,
                    images,
                    node.name,
                    idx,
                    feat,
                    pos,
                    rule=rule,
                    unpool=unpool,
                    max_bytes=max_bytes,
                    how=how,
                    groups=groups,
                )
                where = pos
            else:
                assert rec is not None  # recorded above for every "whole" plan
                rows = torch.searchsorted(used, idx)
                proj, act, where = project_recorded(
                    graph,
                    rec,
                    node.name,
                    rows,
                    feat,
                    mode=mode,
                    rule=rule,
                    unpool=unpool,
                    position=pos,
                    max_bytes=max_bytes,
                    walk=how.walk,
                )
            results.append(
                Projection(
                    projections=proj,
                    image_index=idx,
                    feature=feat,
                    activation=act.cpu(),
                    position=where.cpu(),
                    layer=s.layer,
                    mode=mode,
                    rule=rule,
                    unpool=unpool,
                )
            )
    return results


def deconvolve(
    model: nn.Module,
    images: torch.Tensor,
    layer: Layer,
    feature: Union[int, Sequence[int], torch.Tensor],
    image_index: Optional[Union[Sequence[int], torch.Tensor]] = None,
    *,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    position: Optional[torch.Tensor] = None,
    graph: Optional[Graph] = None,
    max_bytes: int = MAX_BYTES,
) -> Projection:
    """Project many (image, channel) seeds of one layer in batched passes.

    ``images``: model input ``(B, C, H, W)``. ``layer``: a node name as
    torchvision names it (``"layer2.1.relu_1"``, ``"classifier.6"`` for a logit;
    see ``deconvviz layers --all``) or, on a plain conv stack, a block number
    (block L ends after the L-th conv's ReLU and pool). Seed ``s`` is channel
    ``feature[s]`` of image ``image_index[s]`` (default: one seed per image,
    ``feature`` broadcast). ``mode``: ``"max"`` seeds the channel's strongest
    activation (the paper), ``"map"`` its whole map, ``"position"`` its value at
    ``position`` ``(S, 2)``. ``rule``: ``"deconvnet"`` (ReLUs rectify the signal),
    ``"guided"`` or ``"gradient"``; ``unpool``: ``"switches"`` or ``"nearest"``.
    ``graph``: the model's :class:`~deconvviz.engine.net.graph.Graph` (built here if
    not given). Seeds at one position go back inside their receptive fields
    only, and record only them where that costs less. Returns a
    :class:`~deconvviz.engine.deconv.projection.Projection` with full-image
    ``projections`` ``(S, C, H, W)``.
    """
    return deconvolve_many(
        model,
        images,
        [Seeds(layer, feature, image_index, position)],
        mode=mode,
        rule=rule,
        unpool=unpool,
        graph=graph,
        max_bytes=max_bytes,
    )[0]


def project(
    model: nn.Module,
    images: torch.Tensor,
    layer: Layer,
    feature: int,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    graph: Optional[Graph] = None,
) -> torch.Tensor:
    """Project channel ``feature`` of ``layer`` back to pixels for each image.

    ``images`` ``(B, C, H, W)`` (e.g. from :func:`deconvviz.load_data`) -> raw,
    signed projections ``(B, C, H, W)``, one per image (zero where the channel
    does not fire). ``mode``: ``"max"`` (Zeiler & Fergus, arXiv 1311.2901) or
    ``"map"``; ``layer``, ``rule`` and ``unpool`` as in :func:`deconvolve`.
    """
    if mode == "position":
        raise DeconvvizError("project() takes mode 'max' or 'map'; use deconvolve() for positions")
    return deconvolve(
        model, images, layer, feature, mode=mode, rule=rule, unpool=unpool, graph=graph
    ).projections
