"""Benchmark of ``deconvviz report`` and of the projections (issue 10), from one run.

Prints, in order:

1. **report vs the best plain forward pass** (CIFAR-10 train, 50,000 images): the whole
   ``deconvviz report --no-png`` process against the whole ``benchmarks/plain_forward.py``
   process (the bundled network, channels-last, ``inference_mode``, one reused input
   buffer, batch 128, reading the same decoded ``uint8`` images from deconvviz's decode
   cache with ``numpy.load(mmap_mode="r")``, so neither side decodes). Paired runs,
   interleaved (baseline, report, baseline, report, ...), medians and spreads; peak RSS
   and the HDF5 size of the report. Optionally (``--sweep``) a batch-size sweep of the
   scan and of the plain forward on the first ``--sweep-images`` images.
2. **projections vs Captum** on the seeds of that report (layers 1 and 2, k = 9, 864
   seeds): ``deconvviz.deconvolve(..., mode="position")`` (one call per layer, each
   image once) against Captum's ``NeuronDeconvolution`` called once per feature with
   that feature's k images, and once per seed; the largest difference first.
3. the same on **VGG-16 at 224x224** (torchvision ``vgg16()``, seeded random weights,
   ImageNet normalisation): seeds of layers 4, 7 and 10 (conv2_2, conv3_3, conv4_3)
   from a top-9 scan of the first ``--vgg-scan`` images of ``--vgg-data``, timed on the
   first ``--vgg-features`` features of each layer.
4. **peak memory** of the CIFAR report at two data sizes (``--memory-sizes``), each a
   whole process, and of a VGG-16 report (``--vgg-report-layers``, k = 9, scan of the
   first ``--vgg-report-images`` images) with its file size.
5. **decode images/s** of ``--vgg-data`` to 224x224: cold (an empty decode cache) and
   cached. Single process only: ``--workers`` decoding is not in this tree.

Usage::

    python benchmarks/bench_report.py [--repeats 3] [--json bench.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(REPO))

from deconvviz.data.resolve import resolve_source  # noqa: E402
from deconvviz.data.source import normalize  # noqa: E402
from deconvviz.engine.deconv.deconvnet import deconvolve  # noqa: E402
from deconvviz.engine.net.layers import conv_stack, get_layer  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def log(msg: str) -> None:
    print(msg, flush=True)


def spread(values):
    """``median (min-max)`` of a list of seconds."""
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


# Run a Python command and print its own peak RSS (VmHWM, reset by exec) at exit:
# the rusage of a child counts the parent's RSS at fork, which is large after VGG-16.
_HWM = (
    "import atexit, runpy, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            print('BENCH_VMHWM_KIB', line.split()[1], file=sys.stderr)\n"
    "atexit.register(_hwm)\n"
    "sys.argv = sys.argv[1:]\n"
    "if sys.argv[0] == '-m':\n"
    "    sys.argv = sys.argv[1:]\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def timed(cmd):
    """Wall time and peak RSS (KiB, the child's VmHWM) of one whole Python process; its
    CPU time (user + sys, from ``wait4``) is left in ``timed.cpu``."""
    assert cmd[0] == sys.executable
    cmd = [sys.executable, "-c", _HWM] + list(cmd[1:])
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(), fe.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{err[-2000:]}")
    timed.cpu = usage.ru_utime + usage.ru_stime
    hwm = [int(line.split()[1]) for line in err.splitlines() if line.startswith("BENCH_VMHWM_KIB")]
    return wall, hwm[-1] if hwm else -1, out


# --------------------------------------------------------------------------- 1. report


def report_cmd(data, out_dir, extra=()):
    return [
        sys.executable,
        "-m",
        "deconvviz",
        "report",
        "--data",
        str(data),
        "--split",
        "train",
        "--no-png",
        "--quiet",
        "--out",
        str(out_dir),
        *extra,
    ]


def baseline_cmd(cache, batch_size):
    return [
        sys.executable,
        str(REPO / "benchmarks" / "plain_forward.py"),
        str(cache),
        "--batch-size",
        str(batch_size),
    ]


def bench_report_vs_forward(args, res, tmp):
    source = resolve_source(args.data, split="train")
    cache = getattr(source, "_cache_file", None)
    if cache is None:
        raise SystemExit(f"{args.data} is not read from a decode cache")
    log(
        f"[1] report vs plain forward: {len(source)} images of {source.description}; "
        f"decode cache {cache}"
    )
    runs = {
        "forward": [],
        "report": [],
        "forward_rss": [],
        "report_rss": [],
        "forward_cpu": [],
        "report_cpu": [],
    }
    out_dir = Path(tmp) / "cifar_report"
    for r in range(args.repeats):
        for name, cmd in (
            ("forward", baseline_cmd(cache, args.baseline_batch_size)),
            ("report", report_cmd(args.data, out_dir)),
        ):
            wall, rss, _ = timed(cmd)
            runs[name].append(wall)
            runs[name + "_rss"].append(rss)
            runs[name + "_cpu"].append(timed.cpu)
            log(
                f"    run {r + 1}: {name:8s} {wall:6.2f} s wall, {timed.cpu:6.2f} s CPU, peak RSS "
                f"{rss / 1024:.0f} MiB"
            )
    ratios = [b / a for a, b in zip(runs["forward"], runs["report"])]
    cpu_ratios = [b / a for a, b in zip(runs["forward_cpu"], runs["report_cpu"])]
    res["report_vs_forward"] = dict(
        runs,
        ratios=ratios,
        ratio_median=statistics.median(ratios),
        cpu_ratios=cpu_ratios,
        ratio_of_medians=statistics.median(runs["report"]) / statistics.median(runs["forward"]),
        h5_bytes=os.path.getsize(out_dir / "report.h5"),
        images=len(source),
        baseline_batch_size=args.baseline_batch_size,
    )
    r = res["report_vs_forward"]
    log(
        f"==> plain forward {spread(runs['forward'])}; report {spread(runs['report'])}; "
        f"report / forward per pair {min(ratios):.3f}-{max(ratios):.3f}, median "
        f"{r['ratio_median']:.3f} (target <= 1.15); report.h5 {r['h5_bytes'] / 1e6:.1f} MB; "
        f"peak RSS report {statistics.median(runs['report_rss']) / 1024:.0f} MiB, forward "
        f"{statistics.median(runs['forward_rss']) / 1024:.0f} MiB"
    )
    log(
        f"    CPU time (user + sys): forward {spread(runs['forward_cpu'])}, report "
        f"{spread(runs['report_cpu'])}; report / forward per pair {min(cpu_ratios):.3f}-"
        f"{max(cpu_ratios):.3f}, median {statistics.median(cpu_ratios):.3f}"
    )
    return out_dir / "report.h5", source


def bench_sweep(args, res, source):
    """Scan (in-process, layers 1+2, k=9) and plain forward over the first N images."""
    import numpy as np

    from deconvviz.engine.scan import scan_topk
    from deconvviz.models.checkpoint import load_model

    model = load_model(None)
    n = min(args.sweep_images, len(source))
    sizes = [int(v) for v in args.sweep.split(",")]
    pixels = np.load(source.cache_file, mmap_mode="r")[:n]
    norm = model.meta["normalization"]
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)

    def forward(bs):
        buf = torch.empty((bs, 3, 32, 32)).contiguous(memory_format=torch.channels_last)
        raw = torch.empty((bs, 3, 32, 32), dtype=torch.uint8)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, n, bs):
                m = min(bs, n - s)
                raw[:m].numpy()[...] = pixels[s : s + m]
                model(buf[:m].copy_(raw[:m]).div_(255.0).sub_(mean).div_(std))
        return time.perf_counter() - t0

    def scan(bs):
        t0 = time.perf_counter()
        scan_topk(model, source, [1, 2], 9, batch_size=bs, stop=n)
        return time.perf_counter() - t0

    out = {"images": n, "forward": {}, "scan": {}}
    for _ in range(args.sweep_repeats):
        for bs in sizes:
            out["forward"].setdefault(bs, []).append(forward(bs))
            out["scan"].setdefault(bs, []).append(scan(bs))
    res["batch_sweep"] = out
    log(f"[1b] batch-size sweep over {n} images (median of {args.sweep_repeats}, in-process):")
    for bs in sizes:
        log(
            f"    batch {bs:4d}: plain forward {statistics.median(out['forward'][bs]):.2f} s, "
            f"scan {statistics.median(out['scan'][bs]):.2f} s"
        )


# --------------------------------------------------------------------------- 2./3. Captum


def captum_copy(model):
    """The conv stack for Captum: its ReLUs not in place (Captum's hooks need that)."""
    stack = copy.deepcopy(conv_stack(model))
    for m in stack.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return stack.eval()


def captum_per_feature(stack, end, x_of, layer_seeds):
    """One ``NeuronDeconvolution.attribute`` per feature over its k images -> {f: (k,3,H,W)}."""
    from captum.attr import NeuronDeconvolution

    trunk = stack[:end]
    nd = NeuronDeconvolution(trunk, trunk[end - 1])
    out = {}
    for f, (images, pos) in layer_seeds.items():
        x = torch.stack([x_of[i] for i in images])
        rows = torch.arange(x.shape[0])

        def select(o, f=f, pos=pos, rows=rows):
            return o[rows, f, pos[:, 0], pos[:, 1]]

        out[f] = nd.attribute(x, neuron_selector=select)
    return out


def captum_per_seed(stack, end, x_of, layer_seeds):
    from captum.attr import NeuronDeconvolution

    trunk = stack[:end]
    nd = NeuronDeconvolution(trunk, trunk[end - 1])
    out = {}
    for f, (images, pos) in layer_seeds.items():
        out[f] = torch.cat(
            [
                nd.attribute(x_of[i].unsqueeze(0), neuron_selector=(f, int(p[0]), int(p[1])))
                for i, p in zip(images, pos)
            ]
        )
    return out


def ours(model, x_of, layer, layer_seeds):
    """``deconvolve`` in position mode: every seed of the layer in one call, each image once."""
    images = sorted({i for imgs, _ in layer_seeds.values() for i in imgs})
    row = {i: j for j, i in enumerate(images)}
    feats, idx, pos = [], [], []
    for f, (imgs, p) in layer_seeds.items():
        feats += [f] * len(imgs)
        idx += [row[i] for i in imgs]
        pos.append(p)
    x = torch.stack([x_of[i] for i in images])
    res = deconvolve(
        model,
        x,
        layer,
        torch.tensor(feats),
        torch.tensor(idx),
        mode="position",
        position=torch.cat(pos),
    )
    out, s = {}, 0
    for f, (imgs, _) in layer_seeds.items():
        out[f] = (res.projections[s : s + len(imgs)], res.activation[s : s + len(imgs)])
        s += len(imgs)
    return out


def compare_projections(name, model, x_of, seeds, repeats, per_seed_features=None):
    """Time ours / Captum per feature / Captum per seed (interleaved); check they agree.

    ``seeds``: {layer: {feature: (image ids, positions (k, 2))}}. Captum gives the
    gradient of the seeded unit; the deconvnet seeds the unit's value, so Captum's
    map times the activation is compared.
    """
    stack = captum_copy(model)
    ends = {L: get_layer(model, L, tuple(next(iter(x_of.values())).shape[-2:])).end for L in seeds}
    per_seed_sel = {
        L: dict(list(s.items())[:per_seed_features]) if per_seed_features else s
        for L, s in seeds.items()
    }
    n_seeds = sum(len(i) for s in seeds.values() for i, _ in s.values())
    n_seed_sel = sum(len(i) for s in per_seed_sel.values() for i, _ in s.values())
    n_feat = sum(len(s) for s in seeds.values())
    torch.set_grad_enabled(True)
    diff = scale = 0.0
    for L in seeds:  # warm-up and the numerical check
        mine = ours(model, x_of, L, seeds[L])
        theirs = captum_per_feature(stack, ends[L], x_of, seeds[L])
        one = captum_per_seed(stack, ends[L], x_of, dict(list(per_seed_sel[L].items())[:1]))
        for f, (proj, act) in mine.items():
            want = theirs[f] * act.view(-1, 1, 1, 1)
            diff = max(diff, float((proj - want).abs().max()))
            scale = max(scale, float(want.abs().max()))
        for f, g in one.items():
            want = g * mine[f][1].view(-1, 1, 1, 1)
            diff = max(diff, float((mine[f][0] - want).abs().max()))
    # float32 forward passes in two memory formats can flip a near-tie of a max pool;
    # in float64 the two methods must agree to rounding (first feature of each layer).
    model64, stack64 = copy.deepcopy(model).double(), copy.deepcopy(stack).double()
    x64 = {i: x.double() for i, x in x_of.items()}
    diff64 = 0.0
    for L in seeds:
        first = dict(list(seeds[L].items())[:1])
        mine = ours(model64, x64, L, first)
        theirs = captum_per_feature(stack64, ends[L], x64, first)
        for f, (proj, act) in mine.items():
            diff64 = max(diff64, float((proj - theirs[f] * act.view(-1, 1, 1, 1)).abs().max()))
    del model64, stack64, x64
    runs = {"ours": [], "captum_per_feature": [], "captum_per_seed": [], "ours_per_seed_subset": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        for L in seeds:
            ours(model, x_of, L, seeds[L])
        runs["ours"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for L in seeds:
            captum_per_feature(stack, ends[L], x_of, seeds[L])
        runs["captum_per_feature"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for L in seeds:
            captum_per_seed(stack, ends[L], x_of, per_seed_sel[L])
        runs["captum_per_seed"].append(time.perf_counter() - t0)
        if per_seed_features:
            t0 = time.perf_counter()
            for L in seeds:
                ours(model, x_of, L, per_seed_sel[L])
            runs["ours_per_seed_subset"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    base_seed = med.get("ours_per_seed_subset", med["ours"])
    out = dict(
        runs=runs,
        seeds=n_seeds,
        features=n_feat,
        per_seed_seeds=n_seed_sel,
        max_abs_diff=diff,
        scale=scale,
        max_abs_diff_float64=diff64,
        speedup_per_feature=med["captum_per_feature"] / med["ours"],
        speedup_per_seed=med["captum_per_seed"] / base_seed,
    )
    log(
        f"==> {name}: {n_seeds} seeds of {n_feat} features; max |ours - Captum x activation| "
        f"= {diff:.2e} in float32 (values up to {scale:.2e}); {diff64:.2e} in float64 "
        f"(first feature of each layer)"
    )
    log(
        f"    deconvolve {spread(runs['ours'])}; Captum per feature "
        f"{spread(runs['captum_per_feature'])}: {out['speedup_per_feature']:.1f}x"
    )
    sub = (
        f" (on {n_seed_sel} seeds; deconvolve on them {spread(runs['ours_per_seed_subset'])})"
        if per_seed_features
        else ""
    )
    log(
        f"    Captum per seed {spread(runs['captum_per_seed'])}{sub}: "
        f"{out['speedup_per_seed']:.1f}x"
    )
    return out


def seeds_of_report(path, source, mean, std):
    from deconvviz.store.report_read import read_report_h5

    rep = read_report_h5(path)
    seeds = {}
    wanted = set()
    for L, lr in rep.layers.items():
        seeds[L] = {
            f: ([int(i) for i in lr.image_index[f]], torch.from_numpy(lr.position[f]))
            for f in range(lr.image_index.shape[0])
        }
        wanted |= {int(i) for i in lr.image_index.reshape(-1)}
    wanted = sorted(wanted)
    x = normalize(source.read_indices(wanted), mean, std)
    return seeds, {i: x[j] for j, i in enumerate(wanted)}


# --------------------------------------------------------------------------- VGG-16


def vgg16_model(seed: int = 0):
    """torchvision's VGG-16 with seeded random weights and a deconvviz-style ``meta``."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.vgg16().eval()
    model.meta = {
        "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "input_size": [3, 224, 224],
        "class_names": [f"class {i}" for i in range(1000)],
        "sha256": "",
        "path": f"torchvision vgg16() random weights, seed {seed}",
    }
    return model


def vgg_seeds(args, model, source):
    from deconvviz.engine.scan import scan_topk
    from deconvviz.engine.topk import finalize_topk

    n = min(args.vgg_scan, len(source))
    t0 = time.perf_counter()
    tops = scan_topk(model, source, [4, 7, 10], 9, stop=n)
    log(f"    scan of {n} images to layer 10 (k=9): {time.perf_counter() - t0:.1f} s")
    seeds, wanted = {}, set()
    for L, t in tops.items():
        t = finalize_topk(t, n)
        F_ = t.image_index.shape[0]
        feats = torch.linspace(0, F_ - 1, args.vgg_features).round().long().tolist()
        seeds[L] = {f: ([int(i) for i in t.image_index[f]], t.position[f]) for f in feats}
        wanted |= {i for f in feats for i in seeds[L][f][0]}
    wanted = sorted(wanted)
    x = normalize(source.read_indices(wanted), IMAGENET_MEAN, IMAGENET_STD)
    return seeds, {i: x[j] for j, i in enumerate(wanted)}


# --------------------------------------------------------------------------- 4. memory


def _vgg_child(args):
    """Child process: a VGG-16 report written to --child-out; prints JSON."""
    from deconvviz.runs.report_run import write_report

    model = vgg16_model()
    source = resolve_source(args.vgg_data, split=None, image_size=(224, 224))
    layers = [int(v) for v in args.vgg_report_layers.split(",")] if args.vgg_report_layers else None
    t0 = time.perf_counter()
    timings = {}
    write_report(
        model,
        source,
        args.child_out,
        layers,
        9,
        progress=False,
        png=False,
        limit=args.vgg_report_images,
        timings=timings,
    )
    import resource

    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - t0,
                "timings": timings,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "bytes": os.path.getsize(Path(args.child_out) / "report.h5"),
            }
        )
    )


def bench_memory(args, res, tmp):
    res["memory"] = []
    for n in [int(v) for v in args.memory_sizes.split(",") if v.strip()]:
        out_dir = Path(tmp) / f"mem{n}"
        wall, rss, _ = timed(report_cmd(args.data, out_dir, ["--limit", str(n)]))
        size = os.path.getsize(out_dir / "report.h5")
        res["memory"].append({"images": n, "peak_rss_kib": rss, "seconds": wall, "bytes": size})
        log(
            f"[4] CIFAR report over {n} images: peak RSS {rss / 1024:.0f} MiB, report.h5 "
            f"{size / 1e6:.1f} MB, {wall:.1f} s"
        )
    if args.vgg_report_images:
        cmd = [
            sys.executable,
            __file__,
            "--child-vgg-report",
            "--child-out",
            str(Path(tmp) / "vgg_report"),
            "--vgg-data",
            args.vgg_data,
            "--vgg-report-images",
            str(args.vgg_report_images),
            "--vgg-report-layers",
            args.vgg_report_layers,
        ]
        wall, rss, out = timed(cmd)
        m = json.loads(out.strip().splitlines()[-1])
        res["vgg_report"] = dict(m, wall=wall, peak_rss_wait4_kib=rss)
        log(
            f"[4] VGG-16 report (layers {args.vgg_report_layers or 'all 13'}, k=9, scan of "
            f"{args.vgg_report_images} images at 224x224): report.h5 {m['bytes'] / 1e6:.1f} MB, "
            f"peak RSS {rss / 1024:.0f} MiB, {wall:.0f} s (scan {m['timings']['scan']:.0f} s, "
            f"projections and writing {m['timings']['project']:.0f} s)"
        )


# --------------------------------------------------------------------------- 5. decoding


def bench_decode(args, res, tmp):
    env_cache = os.environ.get("DECONVVIZ_CACHE")
    os.environ["DECONVVIZ_CACHE"] = str(Path(tmp) / "decode-cache")
    try:
        out = {}
        t0 = time.perf_counter()
        src = resolve_source(args.vgg_data, split=None, image_size=(224, 224))
        out["cold_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        src = resolve_source(args.vgg_data, split=None, image_size=(224, 224))
        for s in range(0, len(src), 64):
            src.read(s, s + 64)
        out["cached_s"] = time.perf_counter() - t0
        out["images"] = len(src)
    finally:
        if env_cache is None:
            os.environ.pop("DECONVVIZ_CACHE")
        else:
            os.environ["DECONVVIZ_CACHE"] = env_cache
    res["decode"] = out
    log(
        f"[5] decoding {out['images']} images of {args.vgg_data} to 224x224, one process: "
        f"cold {out['images'] / out['cold_s']:.0f} images/s ({out['cold_s']:.1f} s), cached "
        f"{out['images'] / out['cached_s']:.0f} images/s (resolve + read all)"
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "cifar10" / "train"))
    ap.add_argument("--repeats", type=int, default=3, help="paired runs of each comparison")
    ap.add_argument("--baseline-batch-size", type=int, default=128)
    ap.add_argument("--sweep", default="", help="batch sizes to sweep, e.g. 32,64,128,256,512")
    ap.add_argument("--sweep-images", type=int, default=10000)
    ap.add_argument("--sweep-repeats", type=int, default=2)
    ap.add_argument("--vgg-data", default=str(SHARED / "imagenet-samples"))
    ap.add_argument("--vgg-scan", type=int, default=64, help="images scanned for VGG seeds")
    ap.add_argument("--vgg-features", type=int, default=4, help="features timed per VGG layer")
    ap.add_argument("--vgg-repeats", type=int, default=1)
    ap.add_argument("--memory-sizes", default="10000,50000")
    ap.add_argument(
        "--vgg-report-images",
        type=int,
        default=0,
        help="images of the VGG-16 report's scan (0: skip that report)",
    )
    ap.add_argument("--vgg-report-layers", default="", help="comma-separated (default all)")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to skip: report,sweep,cifar,vgg,memory,decode",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--child-vgg-report", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_vgg_report:
        _vgg_child(args)
        return
    skip = set(args.skip.split(","))
    res = {
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    log(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"CUDA {'available' if res['cuda'] else 'not available'}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    from deconvviz.models.checkpoint import load_model

    with tempfile.TemporaryDirectory() as tmp:
        report_h5 = None
        source = resolve_source(args.data, split="train")
        if "report" not in skip:
            report_h5, source = bench_report_vs_forward(args, res, tmp)
        if args.sweep and "sweep" not in skip:
            bench_sweep(args, res, source)
        if "cifar" not in skip:
            model = load_model(None)
            norm = model.meta["normalization"]
            if report_h5 is None:
                report_h5 = Path(tmp) / "seeds" / "report.h5"
                timed(report_cmd(args.data, report_h5.parent))
            seeds, x_of = seeds_of_report(report_h5, source, norm["mean"], norm["std"])
            log("[2] projections of the CIFAR report's seeds (layers 1, 2; k = 9)")
            res["cifar_projections"] = compare_projections(
                "CIFAR", model, x_of, seeds, args.repeats
            )
        if "vgg" not in skip:
            log(
                f"[3] VGG-16 at 224x224 (random weights): layers 4, 7, 10, "
                f"{args.vgg_features} features each, k = 9"
            )
            model = vgg16_model()
            vsrc = resolve_source(args.vgg_data, split=None, image_size=(224, 224))
            seeds, x_of = vgg_seeds(args, model, vsrc)
            res["vgg_projections"] = compare_projections(
                "VGG-16", model, x_of, seeds, args.vgg_repeats, per_seed_features=1
            )
        if "memory" not in skip:
            bench_memory(args, res, tmp)
        if "decode" not in skip:
            bench_decode(args, res, tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
