"""The baseline of the report benchmark: the fastest plain forward pass a PyTorch user
would write over the same decoded images, as a whole process.

Reads deconvviz's decode cache (a ``.npy`` file of ``uint8 (N, 3, H, W)``) with
``numpy.load(mmap_mode="r")`` batch by batch, normalises into one reused
channels-last float32 buffer and runs the whole bundled network (conv stack and
classifier) under ``torch.inference_mode()``. Decoding is excluded, as it is
from the report (which reads the same cache).

``--lanes N`` runs N batches side by side, each on a thread of its own with one intra-op
thread (what deconvviz's scan does on the CPU, ``deconvviz.engine.lanes``), instead of one
batch at a time on all threads: the baseline a user who knows that trick would write.

Usage: ``python benchmarks/plain_forward.py CACHE.npy [--batch-size 128] [--model PT]
[--limit N] [--lanes N]``
"""

import argparse
import threading
import time

import numpy as np
import torch

import deconvviz


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", help="decoded-image cache file (.npy, uint8 (N, 3, H, W))")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled network)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument(
        "--contiguous", action="store_true", help="default memory format instead of channels-last"
    )
    ap.add_argument(
        "--lanes", type=int, default=1, help="batches side by side, one thread each (default 1)"
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = deconvviz.load_model(args.model)
    norm = model.meta["normalization"]
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1)
    pixels = np.load(args.cache, mmap_mode="r")[: args.limit]
    n_img, bs = pixels.shape[0], args.batch_size
    fmt = torch.contiguous_format if args.contiguous else torch.channels_last
    starts = list(range(0, n_img, bs))
    sums = [0.0] * len(starts)

    def lane(mine, threads):
        torch.set_num_threads(threads)
        raw = torch.empty((bs,) + pixels.shape[1:], dtype=torch.uint8)
        buf = torch.empty((bs,) + pixels.shape[1:], dtype=torch.float32).contiguous(
            memory_format=fmt
        )
        with torch.inference_mode():
            for b in mine:
                s = starts[b]
                n = min(bs, n_img - s)
                raw[:n].numpy()[...] = pixels[s : s + n]  # one read into a reused buffer
                x = buf[:n]
                x.copy_(raw[:n]).div_(255.0).sub_(mean).div_(std)
                sums[b] = float(model(x)[:, 0].sum())

    if args.lanes <= 1:
        lane(range(len(starts)), torch.get_num_threads())
    else:
        workers = [
            threading.Thread(target=lane, args=(range(j, len(starts), args.lanes), 1))
            for j in range(args.lanes)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    checksum = sum(sums)
    print(
        f"plain forward: {n_img} images, batch {bs}, {args.lanes} lane(s), "
        f"{time.perf_counter() - t0:.2f} s in "
        f"the loop and model load (checksum {checksum:.3f})"
    )


if __name__ == "__main__":
    main()
