"""Benchmark of ``deconvviz report`` (issue 4), all on the same images in one run.

Measures, over a data source (default: ../shared/datasets/cifar10/train):

1. a plain no-grad forward pass of the whole network over the data set (timed
   before and after the report, to show the noise of a shared machine);
2. the full report: scan + top-k, projections and patches (``build_report``),
   then writing the HDF5 file and the PNGs (timed separately);
3. the kept seeds projected again three ways: batched (``project_topk``, what
   the report does), one (image, feature) at a time with ``torch.autograd.grad``
   through a deconvnet ReLU (what per-neuron attribution tools do), and one
   autograd call per feature (its k images in one batch);
4. peak resident memory (VmHWM) of a report over the first N images, each size
   in its own subprocess, to show it does not grow with N.

Usage::

    python benchmarks/bench_report.py --model /path/to/cifar_cnn.pt \\
        [--data ../shared/datasets/cifar10/train] [--layer 1 --layer 2] [--top 9] \\
        [--memory-sizes 10000,50000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deconvviz.models.checkpoint import load_model  # noqa: E402
from deconvviz.data.sources import normalize, resolve_source  # noqa: E402
from deconvviz.engine.layers import conv_stack, get_layer  # noqa: E402
from deconvviz.engine.seeds import project_seeds  # noqa: E402
from deconvviz.engine.topk import TopK  # noqa: E402
from deconvviz.report import build_report, save_report  # noqa: E402


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward passes relu(incoming signal): the deconvnet rule."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


def _autograd_forward(stack, x, end):
    h = x
    for m in list(stack)[:end]:
        if isinstance(m, nn.Conv2d):
            h = F.conv2d(h, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.ReLU):
            h = _DeconvReLU.apply(h)
        else:  # max pool: its gradient routes the signal through the switches
            h = F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation,
                             ceil_mode=m.ceil_mode)
    return h


def autograd_one_at_a_time(model, x_of, layer, top: TopK):
    """One forward + one ``autograd.grad`` per (image, feature) seed -> (F, k, 3, H, W)."""
    info = get_layer(model, layer)
    stack = conv_stack(model)
    F_, k = top.image_index.shape
    out = None
    for f in range(F_):
        for j in range(k):
            x = x_of(int(top.image_index[f, j])).unsqueeze(0).requires_grad_(True)
            h = _autograd_forward(stack, x, info.end)
            y, xx = (int(v) for v in top.position[f, j])
            v = h[0, f, y, xx]
            (g,) = torch.autograd.grad(v, x)
            if out is None:
                out = torch.zeros((F_, k) + tuple(g.shape[1:]))
            out[f, j] = g[0] * v.detach()  # the deconvnet seeds the activation's value
    return out


def autograd_per_feature(model, x_of, layer, top: TopK):
    """One forward over a feature's k images + one ``autograd.grad`` per feature."""
    info = get_layer(model, layer)
    stack = conv_stack(model)
    F_, k = top.image_index.shape
    out = None
    for f in range(F_):
        x = torch.stack([x_of(int(i)) for i in top.image_index[f]]).requires_grad_(True)
        h = _autograd_forward(stack, x, info.end)
        rows = torch.arange(k)
        v = h[rows, f, top.position[f, :, 0], top.position[f, :, 1]]
        # Images of a batch do not interact, so one grad of the sum gives each its own map.
        (g,) = torch.autograd.grad((v * v.detach()).sum(), x)
        if out is None:
            out = torch.zeros((F_, k) + tuple(g.shape[1:]))
        out[f] = g
    return out


def plain_forward(model, source, batch_size, mean, std, stop=None):
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _, images, _ in source.batches(batch_size, stop=stop):
            model(normalize(images, mean, std))
    return time.perf_counter() - t0


def peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def child_memory(args) -> None:
    """Run one report over the first ``--child`` images; print the peak RSS as JSON."""
    model = load_model(args.model)
    source = resolve_source(args.data, split=args.split)
    before = peak_rss_kib()
    t0 = time.perf_counter()
    build_report(model, source, args.layer, args.top, batch_size=args.batch_size,
                 progress=False, limit=args.child)
    print(json.dumps({"images": min(args.child, len(source)), "peak_rss_kib": peak_rss_kib(),
                      "peak_rss_before_scan_kib": before,
                      "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled network)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "cifar10" / "train"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--layer", type=int, action="append", default=None)
    ap.add_argument("--top", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--memory-sizes", default="10000,50000",
                    help="comma-separated image counts for the peak-memory runs ('' to skip)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each projection method (the fastest is reported)")
    ap.add_argument("--seeds-from", default=None, metavar="REPORT.h5",
                    help="only compare the projection methods, on the seeds of this report "
                         "(made from the same --data and --model)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.layer = args.layer or [1, 2]
    if args.child is not None:
        child_memory(args)
        return

    torch.manual_seed(0)
    model = load_model(args.model)
    source = resolve_source(args.data, split=args.split)
    if args.limit:
        # A view of the first N images through the same reader.
        from deconvviz.data.sources import ImageSource
        n = min(args.limit, len(source))
        source = ImageSource(description=f"{source.description}[:{n}]", kind=source.kind,
                             split=source.split, labels=source.labels[:n],
                             class_names=source.class_names, images=source.read(0, n))
    norm = model.meta["normalization"]
    mean, std = norm["mean"], norm["std"]
    res = {"data": source.description, "images": len(source), "layers": args.layer,
           "top": args.top, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
           "checkpoint": model.meta.get("path")}
    print(f"{len(source)} images from {source.description}; layers {args.layer}, k={args.top}, "
          f"{torch.get_num_threads()} threads", flush=True)

    if args.seeds_from:
        from deconvviz.store.report import read_report_h5
        report = read_report_h5(args.seeds_from)
        if report.attrs["checkpoint_sha256"] != model.meta["sha256"]:
            sys.exit(f"{args.seeds_from} was made with another checkpoint")
    else:
        plain_forward(model, source, args.batch_size, mean, std, stop=2000)  # warm-up: allocator
        res["forward_s_before"] = plain_forward(model, source, args.batch_size, mean, std)
        print(f"plain forward:           {res['forward_s_before']:.2f} s", flush=True)

        timings = {}
        t0 = time.perf_counter()
        report = build_report(model, source, args.layer, args.top, batch_size=args.batch_size,
                              progress=False, timings=timings)
        res["report_s"] = time.perf_counter() - t0
        res["report_scan_s"], res["report_project_s"] = timings["scan"], timings["project"]
        print(f"report (scan+project):   {res['report_s']:.2f} s  (scan {timings['scan']:.2f}, "
              f"projections+patches {timings['project']:.2f})", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            save_report(report, tmp, h5=True, png=False)
            res["write_h5_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            save_report(report, tmp, h5=False, png=True)
            res["write_png_s"] = time.perf_counter() - t0
            res["h5_bytes"] = os.path.getsize(Path(tmp) / "report.h5")
        print(f"write HDF5: {res['write_h5_s']:.2f} s ({res['h5_bytes'] / 1e6:.1f} MB); "
              f"PNGs: {res['write_png_s']:.2f} s", flush=True)

        res["forward_s_after"] = plain_forward(model, source, args.batch_size, mean, std)
        fwd = (res["forward_s_before"] + res["forward_s_after"]) / 2
        res["forward_s"] = fwd
        res["ratio_report_over_forward"] = res["report_s"] / fwd
        print(f"plain forward (again):   {res['forward_s_after']:.2f} s", flush=True)
        print(f"==> report / forward = {res['ratio_report_over_forward']:.3f}  (target <= 1.3)",
              flush=True)

    # The same kept seeds, three ways.
    tops = {L: TopK(torch.from_numpy(lr.activation), torch.from_numpy(lr.image_index),
                    torch.from_numpy(lr.position)) for L, lr in report.layers.items()}
    wanted = sorted({int(i) for t in tops.values() for i in t.image_index.reshape(-1)})
    pix = source.read_indices(wanted)
    images = {i: pix[j] for j, i in enumerate(wanted)}
    xs = {i: normalize(pix[j:j + 1], mean, std)[0] for j, i in enumerate(wanted)}
    seeds = sum(t.image_index.numel() for t in tops.values())
    feats = sum(t.image_index.shape[0] for t in tops.values())
    # Short runs on a shared machine are noisy: interleave the three methods and keep
    # each one's fastest of --repeats runs (all runs are saved in the JSON).
    runs = {"batched": [], "one_at_a_time": [], "per_feature": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        batched = project_seeds(model, images, tops)[0]
        runs["batched"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        single = {L: autograd_one_at_a_time(model, xs.get, L, t) for L, t in tops.items()}
        runs["one_at_a_time"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        per_feat = {L: autograd_per_feature(model, xs.get, L, t) for L, t in tops.items()}
        runs["per_feature"].append(time.perf_counter() - t0)
    res["projection_runs_s"] = runs
    res["batched_projection_s"] = min(runs["batched"])
    res["autograd_one_at_a_time_s"] = min(runs["one_at_a_time"])
    res["autograd_per_feature_s"] = min(runs["per_feature"])
    diff = max(float((batched[L] - single[L]).abs().max()) for L in tops)
    diff2 = max(float((batched[L] - per_feat[L]).abs().max()) for L in tops)
    scale = max(float(batched[L].abs().max()) for L in tops)
    res.update(seeds=seeds, features=feats, max_abs_diff_vs_autograd=diff,
               max_abs_diff_vs_per_feature=diff2, projection_scale=scale,
               speedup_vs_one_at_a_time=res["autograd_one_at_a_time_s"] / res["batched_projection_s"],
               speedup_vs_per_feature=res["autograd_per_feature_s"] / res["batched_projection_s"])
    print(f"projections of {seeds} seeds ({feats} features): batched "
          f"{res['batched_projection_s']:.2f} s; autograd one at a time "
          f"{res['autograd_one_at_a_time_s']:.2f} s; autograd per feature "
          f"{res['autograd_per_feature_s']:.2f} s (fastest of {args.repeats})", flush=True)
    print(f"==> speed-up vs one at a time {res['speedup_vs_one_at_a_time']:.1f}x (target >= 3), "
          f"vs per feature {res['speedup_vs_per_feature']:.1f}x (target >= 1); "
          f"max |batched - autograd| = {diff:.2e} (projection scale {scale:.2e})", flush=True)

    sizes = [int(v) for v in args.memory_sizes.split(",") if v.strip()]
    res["memory"] = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--data", args.data, "--split", args.split,
               "--top", str(args.top), "--batch-size", str(args.batch_size), "--child", str(n)]
        cmd += ["--model", args.model] if args.model else []
        for L in args.layer:
            cmd += ["--layer", str(L)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        res["memory"].append(m)
        print(f"peak RSS, report over {m['images']} images: {m['peak_rss_kib'] / 1024:.0f} MiB "
              f"(before the scan {m['peak_rss_before_scan_kib'] / 1024:.0f} MiB; "
              f"{m['seconds']:.1f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
