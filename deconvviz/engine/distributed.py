"""Scale-out of the top-k scan under ``torchrun``: the process group and the exact merge."""

from __future__ import annotations

import contextlib
import os
from functools import reduce
from typing import Dict, Iterator, Union

import torch

from ..errors import DeconvvizError
from .net.network import Layer
from .topk import TopK, merge_topk

__all__ = ["Ranks", "distributed_context", "gather_topk"]


class Ranks:
    """This process's place in a ``torchrun`` job (or a one-process job).

    ``rank``, ``world`` and ``device`` (``cuda:LOCAL_RANK`` under nccl). Work runs in
    :meth:`stage` blocks that every rank enters in the same order: at the end of
    each, the ranks agree whether all of them succeeded. A rank that failed
    re-raises its own error; the others stop with one line saying which rank
    failed. So no rank is left waiting in a collective that another will never
    join, and no rank leaves the group while another still works: the last
    stage is the final barrier before the group is torn down.
    """

    def __init__(self, rank: int, world: int, device: str, group_device: str = "cpu"):
        self.rank, self.world, self.device = rank, world, device
        self._group_device = group_device

    @property
    def writer(self) -> bool:
        """Whether this rank writes the outputs (rank 0)."""
        return self.rank == 0

    @contextlib.contextmanager
    def stage(self, what: str = "") -> Iterator[None]:
        """``with ranks.stage("scan"): ...``: run a block, then agree on its success."""
        if self.world <= 1:
            yield
            return
        import torch.distributed as dist

        failed = None
        try:
            yield
        except BaseException as exc:  # noqa: B902 - Ctrl-C must reach the other ranks too
            failed = exc
        status = torch.tensor(
            [self.rank if failed is not None else self.world],
            dtype=torch.int64,
            device=self._group_device,
        )
        dist.all_reduce(status, op=dist.ReduceOp.MIN)
        if failed is not None:
            raise failed
        first = int(status.item())
        if first < self.world:
            where = f" during {what}" if what else ""
            raise DeconvvizError(
                f"process {first} of this torchrun job failed{where} (see its "
                f"error); process {self.rank} stopped too"
            )


@contextlib.contextmanager
def distributed_context(device: str = "cpu") -> Iterator[Ranks]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group and yield this
    process's :class:`Ranks`; otherwise yield a one-process :class:`Ranks`.

    The backend is gloo on CPU and nccl on CUDA (each rank on ``cuda:LOCAL_RANK``).
    The group is torn down on exit, after every rank has passed its last
    :meth:`Ranks.stage` (on success that is the final barrier).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        yield Ranks(0, 1, device)
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
        yield Ranks(
            dist.get_rank(),
            dist.get_world_size(),
            device,
            group_device=device if backend == "nccl" else "cpu",
        )
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def gather_topk(
    tops: Dict[Layer, TopK], device: Union[str, torch.device] = "cpu"
) -> Dict[Layer, TopK]:
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
