"""Scale-out of the top-k scan under ``torchrun``: the process group and the exact merge."""

from __future__ import annotations

import contextlib
import os
from functools import reduce
from typing import Dict, Iterator, Tuple, Union

import torch

from .topk import TopK, merge_topk

__all__ = ["distributed_context", "gather_topk"]


@contextlib.contextmanager
def distributed_context(device: str = "cpu") -> Iterator[Tuple[int, int, str]]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group, yield
    ``(rank, world_size, device)``; otherwise yield ``(0, 1, device)``.

    The backend is gloo on CPU and nccl on CUDA (each rank on ``cuda:LOCAL_RANK``).
    The group is torn down on exit, also on failure.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        yield 0, 1, device
        return
    import torch.distributed as dist
    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def gather_topk(tops: Dict[int, TopK], device: Union[str, torch.device] = "cpu"
                ) -> Dict[int, TopK]:
    """All-gather every rank's top-k lists and merge them (identical on every rank).

    Needs an initialised ``torch.distributed`` process group; all ranks must
    call it with lists of the same layers and shapes.
    """
    import torch.distributed as dist
    world = dist.get_world_size()
    out = {}
    for layer in sorted(tops):
        parts = []
        t = tops[layer]
        for tensor in (t.activation, t.image_index, t.position):
            local = tensor.contiguous().to(device)
            bufs = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(bufs, local)
            parts.append([b.cpu() for b in bufs])
        ranked = [TopK(a, i, p) for a, i, p in zip(*parts)]
        out[layer] = reduce(lambda x, y: merge_topk(x, y, t.k), ranked)
    return out

