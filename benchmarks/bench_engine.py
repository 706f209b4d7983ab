"""Benchmark of the one graph engine (issue 18): report-shaped seeds through the public
``deconvolve(..., mode="position")`` against what a skilled user writes without deconvviz.

Seeds as a report keeps them: per node, the 8 channels that fire most over the images, each
with its 4 strongest images and their positions (random weights, 224 px, the first
``--images`` photographs of imagenet-samples, float32, channels-last).

Baselines, timed in the same process, interleaved with deconvviz (``--repeats`` pairs):

* **loop**: the network traced with torch.fx, every ReLU replaced by the deconvnet rule as
  an autograd Function, one ``autograd.grad`` per feature with its images in one batch;
* **captum** (``--captum``): Captum's ``NeuronDeconvolution`` once per feature;
* **rules** (``--rules``, for modern CNNs, issue 19): the autograd loop of the float64 proofs
  (``tests/engine/modern_reference.py``) in float32: the network traced with torch.fx up to
  the node and run by an ``fx.Interpreter`` in which every elementwise nonlinearity goes
  back by the deconvnet rule, gates and normalisation statistics are detached; one
  ``autograd.grad`` per feature with its images in one batch.

The largest difference to the baseline (scaled by its largest value) is printed too.

Usage::

    python benchmarks/bench_engine.py --net resnet50 --nodes layer1.2.relu_2 layer2.3.relu_2
    python benchmarks/bench_engine.py --net vgg16 --nodes features.9 features.16 features.23 \
        --captum
    python benchmarks/bench_engine.py --net efficientnet_b0 --rules \
        --nodes features.2.0.block.1 features.3.0.block.1
    python benchmarks/bench_engine.py --net densenet121 --bound \
        --nodes features.denseblock1.denselayer6.relu2 features.denseblock2.denselayer12.relu2
    python benchmarks/bench_engine.py --net shufflenet_v2_x1_0 \
        --nodes stage2.1.branch2.7 stage2.3.branch2.7

Any torchvision classification network by name (``--net``); ReLU networks (ShuffleNet-V2
included) against the autograd loop, the others with ``--rules``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import fx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deconvviz import deconvolve  # noqa: E402
from deconvviz.data.resolve import resolve_source  # noqa: E402
from deconvviz.data.source import normalize  # noqa: E402
from deconvviz.engine.deconv.deconvnet import node_outputs  # noqa: E402
from deconvviz.engine.net.graph import build_graph  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "imagenet-samples"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class DeconvReLU(torch.autograd.Function):
    """ReLU forward; the deconvnet rule backward (the signal rectified)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


def _rule_relu(x, inplace=False):
    return DeconvReLU.apply(x)


def loop_model(model, nodes):
    """The skilled user's baseline: fx-traced up to ``nodes``, every ReLU the rule."""
    from torchvision.models.feature_extraction import create_feature_extractor

    fe = create_feature_extractor(model, return_nodes=list(nodes)).eval()
    gm = fx.symbolic_trace(fe) if not isinstance(fe, fx.GraphModule) else fe
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), torch.nn.ReLU):
            n.op, n.target = "call_function", _rule_relu
        elif n.op == "call_function" and n.target in (F.relu, torch.relu):
            n.target = _rule_relu
    gm.recompile()
    return gm


def loop(gm, x, node, feats, idx, pos):
    out = []
    for f in feats.unique():
        sel = (feats == f).nonzero().view(-1)
        xi = x[idx[sel]].clone().requires_grad_(True)
        y = gm(xi)[node]
        v = y[torch.arange(sel.numel()), f, pos[sel, 0], pos[sel, 1]]
        (g,) = torch.autograd.grad((v * v.detach()).sum(), xi)
        out.append((sel, g))
    res = torch.zeros((feats.numel(),) + tuple(x.shape[1:]))
    for sel, g in out:
        res[sel] = g
    return res


class Trunk(torch.nn.Module):
    """The network up to ``node`` (torchvision's feature extractor), ReLUs not in place
    (Captum's hooks need that): the least a Captum user runs per call."""

    def __init__(self, model, node):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        self.fe = create_feature_extractor(model, return_nodes=[node]).eval()
        for m in self.fe.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        self.node = node

    def forward(self, x):
        return self.fe(x)[self.node]


def captum_loop(trunk, x, feats, idx, pos):
    """Captum's ``NeuronDeconvolution`` once per feature, over that feature's images (a
    selector picks each image's own position), scaled by the seeded value."""
    from captum.attr import NeuronDeconvolution

    layer = (
        trunk.fe.get_submodule(trunk.node)
        if trunk.node in dict(trunk.fe.named_modules())
        else trunk
    )
    nd = NeuronDeconvolution(trunk, layer)
    res = torch.zeros((feats.numel(),) + tuple(x.shape[1:]))
    for f in feats.unique():
        sel = (feats == f).nonzero().view(-1)
        xs, p = x[idx[sel]], pos[sel]
        rows = torch.arange(sel.numel())

        def select(o, f=f, p=p, rows=rows):
            return o[rows, f, p[:, 0], p[:, 1]]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = nd.attribute(xs, neuron_selector=select)
        with torch.no_grad():
            v = trunk(xs)[rows, f, p[:, 0], p[:, 1]]
        res[sel] = a * v.view(-1, 1, 1, 1)
    return res


def rules_loop_model(model, node):
    """The reference's rule-applying interpreter on the network cut at ``node``."""
    sys.path.insert(0, str(REPO / "tests" / "engine"))
    from modern_reference import _RuleInterpreter, rule_trace

    rt = rule_trace(model)
    target, graph, env = rt.node(node), fx.Graph(), {}
    for n in rt.module.graph.nodes:
        env[n] = graph.node_copy(n, lambda a: env[a])
        if n is target:
            break
    graph.output(env[target])
    gm = fx.GraphModule(rt.module, graph)
    state = {"rule": "deconvnet"}
    return lambda xi: {node: _RuleInterpreter(gm, state, "switches", ()).run(xi)}


def report_seeds(graph, x, node, channels=8, k=4):
    """Per node the ``channels`` that fire most, each with its ``k`` strongest images."""
    out = node_outputs(graph, x, [node])[node]
    best, where = out.flatten(2).max(dim=2)  # (B, C)
    chans = best.sum(0).argsort(descending=True)[:channels]
    idx, feat, pos = [], [], []
    w = out.shape[-1]
    for c in chans.tolist():
        imgs = best[:, c].argsort(descending=True)[:k]
        for i in imgs.tolist():
            flat = int(where[i, c])
            idx.append(i)
            feat.append(c)
            pos.append((flat // w, flat % w))
    return torch.tensor(idx), torch.tensor(feat), torch.tensor(pos)


def floor(graph, loops, x, nodes, names, seeds, repeats):
    """Per node, paired: the loop's forwards alone (no backward), deconvviz's forward of
    each distinct image once (a whole recording, as the plan does where the cone covers
    the image), and the whole deconvviz call; the rest of the call is its reverse walks."""
    from deconvviz.engine.deconv.record import record_whole

    for n, name in zip(nodes, names):
        idx, feats, pos = seeds[n]
        used = torch.unique(idx)
        t_fwd, t_rec, t_all = [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.no_grad():
                for f in feats.unique():
                    loops[name](x[idx[(feats == f).nonzero().view(-1)]])
            t_fwd.append(time.perf_counter() - t)
            t = time.perf_counter()
            record_whole(graph, x[used], [name], False)
            t_rec.append(time.perf_counter() - t)
            t = time.perf_counter()
            deconvolve(graph.model, x, n, feats, idx, mode="position", position=pos, graph=graph)
            t_all.append(time.perf_counter() - t)
        med = statistics.median
        print(
            f"floor {name}: {used.numel()} distinct images; loop forwards alone "
            f"{med(t_fwd):.2f} s, deconvviz forward of the distinct images {med(t_rec):.2f} s, "
            f"deconvviz call {med(t_all):.2f} s (reverse walks and the rest "
            f"{med(t_all) - med(t_rec):.2f} s); medians of {repeats}",
            flush=True,
        )


def bound(graph, nodes, names, seeds):
    """Multiply-adds, no timing: the loop's (per seed, a forward to the node and a backward
    to the input through every conv and Linear) against the least any engine must do (each
    distinct image's forward to the node, or the seeds' shared cones where that is cheaper,
    plus one reverse pass per seed through the convs and Linears of its cone, a whole map
    where the cone covers it). Their ratio caps what deconvviz can gain at equal efficiency."""
    from deconvviz.engine.deconv.cone import whole_part
    from deconvviz.engine.deconv.plan import cone_groups, macs, whole_frames

    total_loop = total_floor = 0
    for n, name in zip(nodes, names):
        idx, _, pos = seeds[n]
        whole = whole_frames(graph, name)
        cone = graph.frames(name, hybrid=True) or whole
        weighted = {k for k in whole if graph.node(k).op in ("conv", "linear")}
        fwd, back = macs(graph, whole), macs(graph, whole, weighted)
        reverse = macs(graph, cone, weighted & set(cone))
        images, count = torch.unique(idx).numel(), idx.numel()
        record = images * fwd
        if graph.frames(name) is not None:
            _, above = cone_groups(graph, graph.node(name), idx, pos)
            below = {m.name for m in whole_part(graph, name)}
            record = min(record, images * macs(graph, whole, below) + above)
        cost_loop, cost_floor = count * (fwd + back), record + count * reverse
        total_loop += cost_loop
        total_floor += cost_floor
        print(
            f"bound {name}: {images} distinct images, {count} seeds; loop {cost_loop / 1e9:.1f} G "
            f"multiply-adds; floor {cost_floor / 1e9:.1f} G (recording {record / 1e9:.1f} G, "
            f"reverse passes {count * reverse / 1e9:.1f} G); at most {cost_loop / cost_floor:.2f}x",
            flush=True,
        )
    print(
        f"bound, all nodes: loop {total_loop / 1e9:.1f} G, floor {total_floor / 1e9:.1f} G: "
        f"at most {total_loop / total_floor:.2f}x at equal efficiency",
        flush=True,
    )


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", default="resnet50")
    ap.add_argument(
        "--nodes", nargs="+", required=True, help="node names, or block numbers of a plain stack"
    )
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--captum",
        action="store_true",
        help="Captum per feature as the baseline instead of the autograd loop",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also time the floor's parts: one forward per distinct image (the recording) "
        "and the loop's forwards alone",
    )
    ap.add_argument(
        "--bound",
        action="store_true",
        help="print only the multiply-add bound of the ratio (loop against the least any "
        "engine must compute), no timing",
    )
    ap.add_argument(
        "--rules",
        action="store_true",
        help="the autograd loop with every nonlinearity's rule, gates and norm "
        "statistics held (modern CNNs)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    # Channels-last runs convolutions several times faster on the CPU, for both sides.
    model = getattr(torchvision.models, args.net)().eval().to(memory_format=torch.channels_last)
    src = resolve_source(str(DATA), image_size=(224, 224))
    pix = src.read_indices(list(range(args.images)))
    x = normalize(pix, MEAN, STD).contiguous(memory_format=torch.channels_last)
    graph = build_graph(model, (224, 224))
    nodes = [int(n) if n.isdigit() else n for n in args.nodes]
    names = [graph.node(n).name for n in nodes]
    seeds = {n: report_seeds(graph, x, graph.node(n).name) for n in nodes}
    total = sum(s[0].numel() for s in seeds.values())
    if args.bound:
        bound(graph, nodes, names, seeds)
        return
    if args.rules:
        loops = {name: rules_loop_model(model, name) for name in names}
    else:
        loops = {} if args.captum else dict.fromkeys(names, loop_model(model, names))
    trunks = {name: Trunk(model, name) for name in names} if args.captum else {}

    def ours():
        return [
            deconvolve(
                model,
                x,
                n,
                seeds[n][1],
                seeds[n][0],
                mode="position",
                position=seeds[n][2],
                graph=graph,
            ).projections
            for n in nodes
        ]

    def base():
        if args.captum:
            return [
                captum_loop(trunks[name], x, seeds[n][1], seeds[n][0], seeds[n][2])
                for n, name in zip(nodes, names)
            ]
        return [
            loop(loops[name], x, name, seeds[n][1], seeds[n][0], seeds[n][2])
            for n, name in zip(nodes, names)
        ]

    t_ours, t_base = [], []
    for r in range(args.repeats):
        tb, want = timed(base)
        to, got = timed(ours)
        t_base.append(tb)
        t_ours.append(to)
        print(f"pair {r + 1}: baseline {tb:.2f} s, deconvviz {to:.2f} s", flush=True)
    if args.floor and not args.captum:
        floor(graph, loops, x, nodes, names, seeds, args.repeats)
    err = max(
        float((g - w).abs().max() / w.abs().max().clamp(min=1e-30)) for g, w in zip(got, want)
    )

    def mmm(v):
        return f"{min(v):.2f}/{statistics.median(v):.2f}/{max(v):.2f} s"

    base = "Captum per feature" if args.captum else "rules loop" if args.rules else "autograd loop"
    print(
        f"{args.net} {' '.join(map(str, args.nodes))} ({total} seeds, {args.images} images): "
        f"{base} {mmm(t_base)}, "
        f"deconvviz {mmm(t_ours)} (min/median/max); ratio of medians "
        f"{statistics.median(t_base) / statistics.median(t_ours):.1f}x; "
        f"largest scaled difference {err:.1e}"
    )


if __name__ == "__main__":
    main()
