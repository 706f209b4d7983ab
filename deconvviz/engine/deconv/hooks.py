"""Forward hooks that record activations and max-pooling switches.

All hooks are owned by one context manager; every handle is removed when it
exits, also when the forward pass raises, and the model's train/eval mode is
restored.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import DeconvvizError
from ..net.layers import conv_stack, stack_graph

__all__ = ["Recording", "BlockRecord", "record", "SUPPORTED_MODULES", "check_supported"]

#: What the hook recorder records (the deconvnet itself goes back through many more ops,
#: on the traced graph).
SUPPORTED_MODULES = (nn.Conv2d, nn.ReLU, nn.MaxPool2d)


def check_supported(model: nn.Module, stop: Optional[int] = None) -> None:
    """Raise a clear error for any module in ``stack[:stop]`` the hook recorder cannot record."""
    stack = conv_stack(model)
    prefix = "features." if stack is not model else ""
    for i, m in enumerate(list(stack)[:stop]):
        if not isinstance(m, SUPPORTED_MODULES):
            raise DeconvvizError(
                f"module {prefix}{i} ({type(m).__name__}) is not supported by the "
                "deconvnet (only Conv2d, ReLU and MaxPool2d)"
            )
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise DeconvvizError(
                f"module {prefix}{i} (Conv2d) uses padding_mode="
                f"{m.padding_mode!r}; the deconvnet supports zero padding only"
            )
        if isinstance(m, nn.Conv2d) and isinstance(m.padding, str):
            raise DeconvvizError(
                f"module {prefix}{i} (Conv2d) uses padding={m.padding!r}; give "
                "the padding as numbers"
            )


@dataclass
class BlockRecord:
    """What one conv block did on a batch.

    ``activation``: post-ReLU map ``(B, C, H, W)``; ``output``: the block output
    (after pooling) ``(B, C, h, w)``; ``switches``: flat argmax indices into each
    ``H x W`` input plane of the block's last max pool ``(B, C, h, w)`` (None if
    the block has no pool).
    """

    activation: Optional[torch.Tensor] = None
    output: Optional[torch.Tensor] = None
    switches: Optional[torch.Tensor] = None


@dataclass
class Recording:
    """Per-module records of one forward pass through the conv stack.

    ``masks[i]``: ``output > 0`` of ReLU ``i``; ``switches[i]`` and ``in_sizes[i]``:
    argmax indices and input (H, W) of MaxPool2d ``i``; ``in_sizes[i]`` also for
    each Conv2d; ``blocks[L]``: a :class:`BlockRecord` per conv layer L (from 1).
    Indices ``i`` are positions in the conv stack.
    """

    masks: Dict[int, torch.Tensor] = field(default_factory=dict)
    switches: Dict[int, torch.Tensor] = field(default_factory=dict)
    in_sizes: Dict[int, tuple] = field(default_factory=dict)
    blocks: Dict[int, BlockRecord] = field(default_factory=dict)


def _pool_with_switches(m: nn.MaxPool2d, x: torch.Tensor):
    return F.max_pool2d(
        x,
        m.kernel_size,
        m.stride,
        m.padding,
        m.dilation,
        ceil_mode=m.ceil_mode,
        return_indices=True,
    )


@contextlib.contextmanager
def record(
    model: nn.Module, stop: Optional[int] = None, masks: bool = True, activations: bool = True
) -> Iterator[Recording]:
    """``with record(model) as rec: model(x)`` fills ``rec`` with the pass's records.

    Hooks go on the conv stack's modules up to index ``stop`` (all by default).
    ``masks=False`` skips the ReLU masks (the deconvnet rule does not need them).
    ``activations=False`` keeps no post-ReLU maps and only the last recorded
    block's output: what a projection needs, without holding every layer's
    activations of a large batch (e.g. VGG-16 at 224x224) alive.
    The model is put in eval mode for the pass and left as it was found: mode,
    ``requires_grad`` flags and hooks.
    """
    stack = conv_stack(model)
    modules = list(stack)[:stop]
    check_supported(model, len(modules))
    layer_of_end, block_of = {}, {}
    for index, block in enumerate(stack_graph(model).blocks, start=1):
        if block.end <= len(modules):
            layer_of_end[block.end - 1] = index
        for i in range(block.start, min(block.end, len(modules))):
            block_of[i] = index
    rec = Recording()
    was_training = model.training

    def hook_for(i: int, m: nn.Module):
        def hook(module, inputs, output):
            x = inputs[0]
            blk = rec.blocks.setdefault(block_of.get(i, 0), BlockRecord())
            if isinstance(m, nn.ReLU):
                if masks:
                    rec.masks[i] = (output > 0).detach()
                if activations:
                    blk.activation = output.detach()
            elif isinstance(m, nn.MaxPool2d):
                # The switches are the pool's own argmax, so the pooled values match exactly.
                _, idx = _pool_with_switches(m, x.detach())
                rec.switches[i] = idx
                rec.in_sizes[i] = tuple(x.shape[-2:])
                blk.switches = idx
            elif isinstance(m, nn.Conv2d):
                rec.in_sizes[i] = tuple(x.shape[-2:])
            if i in layer_of_end and (activations or i == len(modules) - 1):
                blk.output = output.detach()

        return hook

    with contextlib.ExitStack() as stack_ctx:
        for i, m in enumerate(modules):
            stack_ctx.enter_context(m.register_forward_hook(hook_for(i, m)))
        try:
            model.eval()
            yield rec
        finally:
            model.train(was_training)
