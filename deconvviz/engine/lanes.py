"""Work spread over the CPU's threads as lanes: each lane a thread of its own running
one piece of work at a time on one intra-op thread.

PyTorch's own parallelism splits every operation over all threads and waits for all of
them at its end. For the operations of a scan batch that wait costs more than it gains: on
2 cores, two batches side by side on one thread each finish sooner than the same two one
after another on two threads each, and one lane's bookkeeping overlaps the other's
arithmetic. (Not so for the chunks of a projection: their operations are small, and two
lanes' Python between them contends for the interpreter; measured slower.) oneDNN computes
the same bytes for an operation on one thread as on several (the tests compare the two),
so where a piece of work runs does not change its result.

:func:`lanes_for` says how many lanes a device and an amount of work take;
:func:`on_lanes` runs the pieces, keeps their order, and raises the error of the first
piece that failed, as running them one after another would.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Callable, Dict, List, Optional, Sequence, TypeVar, Union

import torch

__all__ = ["lanes_for", "on_lanes"]

T = TypeVar("T")
R = TypeVar("R")

_POOL: Optional[futures.ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


def lanes_for(device: Union[str, torch.device], pieces: int) -> int:
    """Lanes for ``pieces`` pieces of work on ``device``: on the CPU one per intra-op
    thread (``torch.get_num_threads()``), at most one per piece; 1 on other devices."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), int(pieces)))


def _pool(lanes: int) -> futures.ThreadPoolExecutor:
    """The lane threads, kept for the process: a report scans in segments, and fresh
    threads each time would each fault in their own memory again."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < lanes:
            _POOL = futures.ThreadPoolExecutor(lanes, thread_name_prefix="deconvviz-lane")
        return _POOL


def on_lanes(fn: Callable[[T], R], items: Sequence[T], lanes: int) -> List[R]:
    """``[fn(item) for item in items]``, with up to ``lanes`` items at once, each on one
    intra-op thread; items start in order.

    The caller's grad and inference modes hold in the lanes, and its thread count is
    restored after. Where items fail, the error of the first failed item is raised once
    the items started before it have finished; later items do not start. Ctrl-C waits
    for the running items and is raised (no item starts after it).
    """
    items = list(items)
    lanes = min(int(lanes), len(items))
    if lanes <= 1:
        return [fn(item) for item in items]
    threads = torch.get_num_threads()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    results: List = [None] * len(items)
    errors: Dict[int, BaseException] = {}
    failed = threading.Event()
    order = iter(range(len(items)))
    lock = threading.Lock()

    def lane() -> None:
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            while not failed.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                try:
                    results[i] = fn(items[i])
                except BaseException as exc:  # raised by the caller's thread
                    errors[i] = exc
                    failed.set()
                    return

    jobs = [_pool(lanes).submit(lane) for _ in range(lanes)]
    try:
        futures.wait(jobs)
    except BaseException:
        failed.set()
        futures.wait(jobs)
        raise
    finally:
        torch.set_num_threads(threads)
    if errors:
        raise errors[min(errors)]
    return results
