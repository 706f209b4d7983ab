"""A plain conv stack and its numbered blocks, as nodes of the traced graph.

The conv stack is ``model.features`` when the model has one (our CNN,
torchvision's AlexNet and VGG), or the model itself when it is an
``nn.Sequential``. **Layer L** is the L-th ``Conv2d`` of that sequence (counting
from 1, as in Zeiler & Fergus); its *block* runs from that conv up to the next
conv, so the layer's output is the block's output (after its ReLU and max pool).
Block numbers are names for graph nodes, nothing more: :func:`stack_blocks`
finds, once per traced graph, the node that ends each block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from torch import nn

from ...errors import DeconvvizError

__all__ = ["Block", "conv_stack", "stack_blocks"]


def conv_stack(model: nn.Module) -> nn.Sequential:
    """The plain sequence of modules the block numbers count in (``model.features``, or the
    model itself when it is an ``nn.Sequential``)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return features
    if isinstance(model, nn.Sequential):
        return model
    raise DeconvvizError(
        f"{type(model).__name__} has no 'features' sequence; numbered layers need the conv "
        "stack as an nn.Sequential (model.features)"
    )


@dataclass(frozen=True)
class Block:
    """Block ``L`` of a plain stack: ``stack[start:end]``, from its conv to the next one.

    ``conv``: the graph node of its ``Conv2d``; ``name``: the node that ends it (the
    last one with a ``(C, H, W)`` output), which block number ``L`` names.
    """

    start: int
    end: int
    conv: str
    name: str


def stack_blocks(model: nn.Module, nodes: Sequence) -> Tuple[Block, ...]:
    """The numbered blocks of ``model``'s conv stack among the graph's ``nodes``
    (:class:`~deconvviz.engine.net.nodes.GraphNode` s in execution order); empty unless
    the stack runs as a chain, each module called once on the one before's output."""
    try:
        stack = conv_stack(model)
    except DeconvvizError:
        return ()
    prefix = "features." if stack is not model else ""
    calls: Dict[str, List] = {}
    for n in nodes:
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
    blocks = []
    for k, ci in enumerate(convs):
        end = convs[k + 1] if k + 1 < len(convs) else len(chain)
        last = ci
        while last + 1 < end and chain[last + 1].spatial:
            last += 1
        blocks.append(Block(ci, end, chain[ci].name, chain[last].name))
    return tuple(blocks)
