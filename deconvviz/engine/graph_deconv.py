"""The deconvnet on any traced CNN: record one forward pass, seed, walk the graph back.

The graph twin of :mod:`.deconvnet` (Zeiler & Fergus, arXiv 1311.2901): same
seeds (``max``, ``map``, ``position``), rules (``deconvnet``, ``guided``,
``gradient``) and unpoolings (``switches``, ``nearest``), same
:class:`~deconvviz.engine.deconvnet.Projection`, on any network
:func:`~deconvviz.engine.graph.build_graph` can trace: VGG with batch norm,
ResNets, GoogLeNet, DenseNet, MobileNet, SqueezeNet, your own. A layer is a
torchvision node name (``"layer3.1.relu_1"``) or, on a plain conv stack, the
legacy layer number.

:func:`record_graph` runs the forward pass once, only up to the seed nodes,
keeping every max pool's switches, the ReLU masks when the rule needs them, and
the seed nodes' outputs; :func:`project_recorded` seeds and sends the seeds back
(:func:`~deconvviz.engine.graph_reverse.reverse_walk`) in chunks that bound
memory; :func:`deconvolve`, :func:`deconvolve_many` and :func:`project` do both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import DeconvvizError
from .deconvnet import (MODES, RULES, UNPOOLS, Projection, _check_choice, _max_positions,
                        check_seeds, seed_maps)
from .graph import Graph, GraphNode, build_graph, eval_mode
from .graph_reverse import GraphRecording, point_walk, reverse_walk

__all__ = ["Seeds", "record_graph", "node_outputs", "project_recorded", "deconvolve",
           "deconvolve_many", "project", "graph_for"]

Layer = Union[int, str]

#: Default bound on the signals of one reverse pass (bytes); seeds go in chunks under it.
MAX_BYTES = 256 * 2 ** 20


@dataclass
class Seeds:
    """Many seeds on one node: seed ``s`` is channel ``feature[s]`` of image ``image_index[s]``.

    ``layer``: node name or legacy layer number; ``feature``: int or ``(S,)``;
    ``image_index``: ``(S,)`` (default: one seed per image, ``feature``
    broadcast); ``position``: ``(S, 2)`` or one ``(row, col)`` for
    ``mode="position"``.
    """

    layer: Layer
    feature: Union[int, Sequence[int], torch.Tensor]
    image_index: Optional[Union[Sequence[int], torch.Tensor]] = None
    position: Optional[Union[Sequence[int], torch.Tensor]] = None


def graph_for(model: nn.Module, images: torch.Tensor, graph: Optional[Graph] = None) -> Graph:
    """``graph`` (or a new one for ``model``) analysed at the images' size, after checks."""
    if images.ndim != 4:
        raise DeconvvizError(f"images must be (B, C, H, W); got shape {tuple(images.shape)}")
    if graph is None:
        graph = build_graph(model, tuple(images.shape[-2:]), in_channels=images.shape[1])
    elif graph.model is not model:
        raise DeconvvizError("the graph was built for another model")
    if images.shape[1] != graph.in_channels:
        raise DeconvvizError(f"images have {images.shape[1]} channels; the network takes "
                             f"{graph.in_channels}")
    return graph.at_size(tuple(images.shape[-2:]))


def record_graph(graph: Graph, images: torch.Tensor, nodes: Sequence[Layer],
                 masks: bool = True) -> GraphRecording:
    """One forward pass of ``images`` ``(B, C, H, W)``, only as far as ``nodes`` need.

    Keeps the outputs of ``nodes``, the switches of every max pool below them,
    the masks of every ReLU below them (``masks=False`` skips them: the
    ``deconvnet`` rule does not need them) and every node's shape. No hook is
    registered: the graph runs node by node, in-place ops out of place, in eval
    mode and without gradients; the model's train/eval flags (of every
    submodule) are restored on exit, also when the forward raises.
    """
    targets = [graph.check_seed(n).name for n in nodes]
    below = {n.name for n in graph.ancestors(targets)}
    rec = GraphRecording({}, {}, {}, {}, int(images.shape[0]))

    def visit(node: GraphNode, value: torch.Tensor, switches: Optional[torch.Tensor]) -> None:
        if node.name not in below:
            return
        rec.shapes[node.name] = tuple(value.shape[1:])
        if switches is not None:
            rec.switches[node.name] = switches
        if masks and node.op == "relu":
            rec.masks[node.name] = value > 0
        elif masks and node.op == "relu6":
            rec.masks[node.name] = (value > 0) & (value < 6)

    x = images
    if x.device.type == "cpu":
        # On the CPU convolutions and pools run several times faster channels-last.
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), eval_mode(graph.model):
        rec.outputs.update(graph.execute(x, targets, visit, switches=True))
    return rec


def node_outputs(graph: Graph, images: torch.Tensor, nodes: Sequence[Layer]
                 ) -> Dict[str, torch.Tensor]:
    """The outputs ``{name: (B, ...)}`` of ``nodes`` on ``images``, running only what they need.

    A plain forward pass (no switches, no masks) for scanning activations, e.g.
    the top-k search; eval mode, no gradients, the model left as found.
    """
    names = [graph.node(n).name for n in nodes]
    for name in names:
        if graph.node(name).error:
            raise DeconvvizError(graph.node(name).error)
    x = images
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), eval_mode(graph.model):
        return graph.execute(x, names)



def _check_seeds(graph: Graph, images: torch.Tensor, seeds: Seeds, mode: str):
    """Validated ``(node, image_index, feature, position)`` of one :class:`Seeds`."""
    node = graph.check_seed(seeds.layer)
    info = graph.info(node.name)
    what = (f"layer {seeds.layer}" if isinstance(seeds.layer, int)
            else f"node '{node.name}'")
    b = images.shape[0]
    idx, feat = check_seeds(seeds.feature, seeds.image_index, b, info.features, what)
    pos = None
    if mode == "position":
        if seeds.position is None and info.output_size != (1, 1):
            raise DeconvvizError("mode 'position' needs a position (row, col)")
        pos = torch.as_tensor(seeds.position if seeds.position is not None else (0, 0),
                              dtype=torch.int64).reshape(-1, 2)
        if pos.shape[0] == 1 and idx.numel() > 1:
            pos = pos.expand(idx.numel(), 2)
        if pos.shape[0] != idx.numel():
            raise DeconvvizError(f"{pos.shape[0]} positions for {idx.numel()} seeds")
        oh, ow = info.output_size
        if idx.numel() and (pos[:, 0].min() < 0 or pos[:, 0].max() >= oh
                            or pos[:, 1].min() < 0 or pos[:, 1].max() >= ow):
            raise DeconvvizError(f"position out of range: {what} output is {oh}x{ow}")
    return node, idx, feat, pos


def _chunk_size(graph: Graph, rec: GraphRecording, node: str, element_size: int,
                max_bytes: int) -> int:
    """Seeds per reverse pass so that the widest signal below ``node`` fits ``max_bytes``."""
    widest = max((torch.Size(rec.shapes[n.name]).numel() for n in graph.ancestors([node])
                  if n.name in rec.shapes), default=1)
    # A signal, the one it is added to, and the op's temporary.
    return max(1, int(max_bytes) // (3 * widest * element_size))


def project_recorded(graph: Graph, rec: GraphRecording, layer: Layer, image_index: torch.Tensor,
                     feature: torch.Tensor, *, mode: str = "max", rule: str = "deconvnet",
                     unpool: str = "switches", position: Optional[torch.Tensor] = None,
                     max_bytes: int = MAX_BYTES, closed_form: bool = True
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed and project S seeds of node ``layer`` from a recording (:func:`record_graph`).

    Seed ``s`` is channel ``feature[s]`` of recorded image ``image_index[s]``:
    its strongest activation (``mode="max"``, first in row-major order), its
    whole map (``"map"``) or its value at ``position[s]`` (``"position"``); every
    other value is zero. A ``(B, C)`` node (a logit) is one position ``(0, 0)``.
    Returns ``(projections (S, C_in, H, W), activation (S,), position (S, 2))``;
    seeds go back in chunks whose signals stay under ``max_bytes``. One-value seeds
    (``max``, ``position``) take the closed form of
    :func:`~deconvviz.engine.graph_reverse.point_walk` down to the first conv
    (``closed_form=False``: the plain walk all the way; the result is the same).
    """
    node = graph.node(layer)
    out = rec.outputs[node.name]
    flat = out.dim() == 2
    out4 = out.reshape(out.shape[0], out.shape[1], 1, 1) if flat else out
    device = out.device
    idx, feat = image_index.to(device), feature.to(device)
    if flat and mode == "position" and position is None:
        position = torch.zeros((idx.numel(), 2), dtype=torch.int64)
    pos_all = None if position is None else position.to(device)
    chunk = _chunk_size(graph, rec, node.name, out.element_size(), max_bytes)
    first = graph.nodes[0].name
    projections, activations, positions = [], [], []
    for c0 in range(0, idx.numel(), chunk):
        sl = slice(c0, c0 + chunk)
        if closed_form and mode != "map" and not flat:
            if mode == "max":
                _, act, pos = _max_positions(out, idx[sl], feat[sl])
            else:
                pos = pos_all[sl]
                act = out[idx[sl], feat[sl], pos[:, 0], pos[:, 1]]
            start, signal = point_walk(graph, rec, node.name, feat[sl], pos, act, idx[sl], rule,
                                       unpool)
        else:
            seeds, act, pos = seed_maps(out4, idx[sl], feat[sl], mode,
                                        None if pos_all is None else pos_all[sl])
            start, signal = node.name, seeds.reshape(seeds.shape[0], -1) if flat else seeds
        projections.append(reverse_walk(graph, rec, start, signal, idx[sl], rule, unpool))
        activations.append(act)
        positions.append(pos)
    if not projections:
        empty = out.new_zeros((0,) + tuple(rec.shapes.get(first, graph.nodes[0].shape)))
        return empty, out.new_zeros(0), torch.zeros((0, 2), dtype=torch.int64)
    return torch.cat(projections), torch.cat(activations), torch.cat(positions)


def deconvolve_many(model: nn.Module, images: torch.Tensor, seeds: Sequence[Seeds], *,
                    mode: str = "max", rule: str = "deconvnet", unpool: str = "switches",
                    graph: Optional[Graph] = None, max_bytes: int = MAX_BYTES
                    ) -> List[Projection]:
    """Project seeds on several nodes with **one** recorded forward pass of ``images``.

    ``images``: model input ``(B, C, H, W)``; ``seeds``: one :class:`Seeds` per
    node. The forward pass runs only as far as the deepest seed node needs; each
    node's seeds go back in batched, memory-bounded passes. Returns one
    :class:`~deconvviz.engine.deconvnet.Projection` per :class:`Seeds`, in order
    (``projections`` ``(S, C, H, W)`` in the model's input space, raw and signed;
    ``layer`` as given).
    """
    _check_choice("mode", mode, MODES)
    _check_choice("rule", rule, RULES)
    _check_choice("unpool", unpool, UNPOOLS)
    graph = graph_for(model, images, graph)
    checked = [_check_seeds(graph, images, s, mode) for s in seeds]
    rec = record_graph(graph, images, [c[0].name for c in checked], masks=rule != "deconvnet")
    results = []
    for s, (node, idx, feat, pos) in zip(seeds, checked):
        with torch.no_grad():
            proj, act, where = project_recorded(graph, rec, node.name, idx, feat, mode=mode,
                                                rule=rule, unpool=unpool, position=pos,
                                                max_bytes=max_bytes)
        results.append(Projection(projections=proj, image_index=idx, feature=feat,
                                  activation=act.cpu(), position=where.cpu(), layer=s.layer,
                                  mode=mode, rule=rule, unpool=unpool))
    return results


def deconvolve(model: nn.Module, images: torch.Tensor, layer: Layer,
               feature: Union[int, Sequence[int], torch.Tensor],
               image_index: Optional[Union[Sequence[int], torch.Tensor]] = None, *,
               mode: str = "max", rule: str = "deconvnet", unpool: str = "switches",
               position: Optional[torch.Tensor] = None, graph: Optional[Graph] = None,
               max_bytes: int = MAX_BYTES) -> Projection:
    """Project many (image, channel) seeds of one node in batched passes.

    The graph twin of :func:`deconvviz.engine.deconvnet.deconvolve`.

    ``layer``: a node name (``"layer2.1.relu_1"``, ``"classifier.6"`` for a
    logit) or a legacy layer number. Seed ``s`` is channel ``feature[s]`` of
    image ``image_index[s]`` (default: one seed per image, ``feature``
    broadcast); ``mode``: ``"max"`` (the paper), ``"map"`` or ``"position"``
    (``position`` ``(S, 2)``). ``graph``: the model's :class:`~deconvviz.engine.graph.Graph`
    (built here if not given). Returns a :class:`~deconvviz.engine.deconvnet.Projection`
    with ``projections`` ``(S, C, H, W)``.
    """
    return deconvolve_many(model, images, [Seeds(layer, feature, image_index, position)],
                           mode=mode, rule=rule, unpool=unpool, graph=graph,
                           max_bytes=max_bytes)[0]


def project(model: nn.Module, images: torch.Tensor, layer: Layer, feature: int,
            mode: str = "max", rule: str = "deconvnet", unpool: str = "switches",
            graph: Optional[Graph] = None) -> torch.Tensor:
    """Project channel ``feature`` of node ``layer`` back to pixels for each image.

    ``images`` ``(B, C, H, W)`` -> raw, signed projections ``(B, C, H, W)`` (zero
    where the channel does not fire). ``mode``: ``"max"`` or ``"map"``; see
    :func:`deconvolve`.
    """
    if mode == "position":
        raise DeconvvizError("project() takes mode 'max' or 'map'; use deconvolve() for positions")
    return deconvolve(model, images, layer, feature, mode=mode, rule=rule, unpool=unpool,
                      graph=graph).projections
