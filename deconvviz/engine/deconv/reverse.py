"""The deconvnet's way down a graph (Zeiler & Fergus, arXiv 1311.2901, 2.1).

:func:`reverse_walk` sends a signal from a seed node back to the input, visiting
the seed's ancestors in reverse execution order; a node's signal is the sum of
what its consumers send it (a residual input, a tensor concatenated several
times). Each op goes back through its own rule, its transpose in
:data:`~.transposes.TRANSPOSES`. :func:`point_walk` takes the first steps of seeds that
are one value each in closed form.

**Windows.** Every signal lives on its node's frame
(:class:`~deconvviz.engine.net.geometry.frames.Frame`):
the whole map, or each seed's window of its cone. A spatial rule answers with
the frame its signal covers (a convolution's or pool's the input window its
output window reads), and the walk shifts it onto the input's frame and zeroes
it outside the map (where the whole pass crops the padding away). On whole
frames this is the plain transpose; on a seed's cone the same sums, skipping
only the zeros outside it.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, List, Tuple

import torch

from ...errors import DeconvvizError
from ..net.geometry.frames import Frame
from ..net.graph import GraphNode
from ..net.run import norm_weight, op_weight
from . import record
from .transposes import TRANSPOSES, batchnorm_scale, by_rule
from .walk import Walk
from .windows import fill_outside

# Walk and TRANSPOSES are the walk's vocabulary: importable from here.
__all__ = ["Walk", "TRANSPOSES", "POINT_OPS", "reverse_walk", "point_walk"]


def _settle(walk: Walk, name: str, g: torch.Tensor) -> torch.Tensor:
    """Zero a node's gathered signal outside its map (the padding a whole pass crops), in
    place: a signal a window op sent is its own new tensor, or a sum the walk made."""
    f = walk.frame(name)
    if f is None or f.whole:
        return g
    return fill_outside(g, walk.origin(name), walk.extent(name))


def _add_window(
    walk: Walk,
    pending: Dict[str, torch.Tensor],
    owned: set,
    parent: str,
    sent: torch.Tensor,
    sent_frame: Frame,
    target: Frame,
) -> None:
    """Add ``sent`` (on ``sent_frame``) into ``parent``'s signal on its frame ``target``,
    in place where the walk owns that signal (no padded copy of ``sent``). Frames that
    move alike with the seed overlap alike for every seed (one slice); a seed's window
    onto a whole map lands at that seed's own place."""
    if parent not in owned:
        base = pending.get(parent)
        pending[parent] = (
            torch.empty(
                tuple(sent.shape[:-2]) + tuple(target.n),
                dtype=sent.dtype,
                device=sent.device,
                memory_format=torch.channels_last if sent.dim() == 4 else torch.contiguous_format,
            ).zero_()
            if base is None
            else base.clone()
        )
        owned.add(parent)
    acc = pending[parent]
    if sent_frame.j == target.j:
        shifts = [(slice(None), (sent_frame.a[0] - target.a[0], sent_frame.a[1] - target.a[1]))]
    else:
        d = (sent_frame.origin(walk.position) - target.origin(walk.position)).tolist()
        shifts = [(s, (dy, dx)) for s, (dy, dx) in enumerate(d)]
    for rows, d in shifts:
        # The part of the window that lies on the other.
        lo = [max(0, d[i]) for i in range(2)]
        hi = [min(target.n[i], d[i] + sent_frame.n[i]) for i in range(2)]
        if lo[0] >= hi[0] or lo[1] >= hi[1]:
            continue
        so = [lo[i] - d[i] for i in range(2)]
        acc[rows, ..., lo[0] : hi[0], lo[1] : hi[1]] += sent[
            rows, ..., so[0] : so[0] + hi[0] - lo[0], so[1] : so[1] + hi[1] - lo[1]
        ]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _signal_bytes(walk: Walk, order: List[GraphNode], elem: int) -> List[int]:
    """For each step of ``order``, the bytes of one seed's signal of that node."""
    sizes = []
    for n in order:
        if n.shape is None:
            sizes.append(0)
        else:
            channels, positions = walk.graph.map_size(n.name, walk.frame(n.name))
            sizes.append(channels * positions * elem)
    return sizes


def reverse_walk(walk: Walk, start: str, signal: torch.Tensor) -> torch.Tensor:
    """Send ``signal`` ``(S, ...)`` on node ``start``'s frame back to the input.

    Returns the input's signal on its frame: ``(S, C, H, W)`` for whole frames,
    each seed's window of the image otherwise (top-left ``walk.origin(input)``).
    Only the start node's ancestors are visited, each once, in reverse order;
    where the signals outgrow :data:`~.record.SIGNAL_BYTES` the seeds go on in groups.
    """
    order = list(reversed(walk.graph.ancestors([start])))
    sizes = _signal_bytes(walk, order, signal.element_size())
    # Pending signals no one else holds (an op's new tensor, a sum the walk made): the walk
    # may add into them, and the next op overwrite them, in place.
    return _walk_on(walk, order, sizes, 0, {start: signal}, set(), {start}, signal)


def _walk_on(
    walk: Walk,
    order: List[GraphNode],
    sizes: List[int],
    step: int,
    pending: Dict[str, torch.Tensor],
    owned: set,
    spread: set,  # nodes a window op sent signal to: it may lie in their padding
    signal: torch.Tensor,
) -> torch.Tensor:
    for i in range(step, len(order)):
        n = order[i]
        if n.name not in pending:
            continue
        seeds = walk.rows.numel()
        cap = record.SIGNAL_BYTES
        if seeds > 1 and seeds * sizes[i] > cap:
            group = max(1, cap // sizes[i])
            return torch.cat(
                [
                    _walk_on(
                        walk.part(slice(a, a + group)),
                        order,
                        sizes,
                        i,
                        {k: t[a : a + group] for k, t in pending.items()},
                        set(owned),
                        set(spread),
                        signal[a : a + group],
                    )
                    for a in range(0, seeds, group)
                ]
            )
        g = pending.pop(n.name)
        if n.name in spread:
            g = _settle(walk, n.name, g)
        if n.op == "input":
            return g
        rule_fn = TRANSPOSES.get(n.op)
        if rule_fn is None:
            raise DeconvvizError(f"{n.label()} has no deconvnet rule")
        walk.mine = n.name in owned
        sent_all = rule_fn(n, g, walk)
        walk.mine = False
        storages = [_storage(t) for _, t, _ in sent_all]
        for (parent, sent, sent_frame), at in zip(sent_all, storages):
            if parent is None:
                continue
            target = walk.frame(parent)
            if sent_frame is not None and sent_frame is not walk.frame(n.name):
                spread.add(parent)
            if sent_frame is not None and target is not None and sent_frame != target:
                _add_window(walk, pending, owned, parent, sent, sent_frame, target)
            elif parent not in pending:
                pending[parent] = sent
                # Its own if no other parent got the same memory, and it is not the
                # signal's (or the signal was the walk's own).
                if storages.count(at) == 1 and (at != _storage(g) or n.name in owned):
                    owned.add(parent)
            elif parent in owned:
                pending[parent] += sent
            else:
                pending[parent] = pending[parent] + sent
                owned.add(parent)
    first = walk.graph.nodes[0]
    f = walk.frame(first.name)
    shape = tuple(walk.rec.shapes.get(first.name) or first.shape)
    if f is not None:
        shape = shape[:1] + tuple(f.n)
    return signal.new_zeros((signal.shape[0],) + shape)


def _stamp(
    walk: Walk,
    conv: GraphNode,
    channel: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    value: torch.Tensor,
) -> torch.Tensor:
    """The transposed conv of one-value seeds on the conv input's frame: seed ``s``
    stamps ``value[s] * W[channel[s]]`` with kernel tap ``(ky, kx)`` landing on row
    ``y * stride - padding + ky * dilation`` (and likewise for columns)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = walk.graph.window_params(conv)
    (parent,) = conv.inputs
    weight = op_weight(conv.spec, walk.graph.model)
    out_ch, in_g = weight.shape[:2]
    c_in = walk.rec.shapes[parent][0]
    f = walk.frame(parent)
    s, dev = channel.shape[0], value.device
    oy, ox = walk.origin(parent)[:, 0], walk.origin(parent)[:, 1]
    # A canvas with a margin on every side holds every tap; the frame is cut out of it after.
    my, mx = max(ph, 0), max(pw, 0)
    hc, wc = f.n[0] + my + dh * (kh - 1) + sh + 1, f.n[1] + mx + dw * (kw - 1) + sw + 1
    taps = (
        (torch.arange(kh, device=dev) * dh).view(kh, 1) * wc
        + (torch.arange(kw, device=dev) * dw).view(1, kw)
    ).view(-1)
    top = (y * sh - ph - oy + my) * wc + (x * sw - pw - ox + mx)
    where = top.view(s, 1, 1) + taps.view(1, 1, -1)
    stamps = weight.index_select(0, channel).to(value.dtype) * value.view(-1, 1, 1, 1)
    canvas = value.new_zeros((s, in_g, hc * wc))
    canvas.scatter_add_(2, where.expand(s, in_g, kh * kw), stamps.reshape(s, in_g, kh * kw))
    image = canvas.view(s, in_g, hc, wc)[:, :, my : my + f.n[0], mx : mx + f.n[1]]
    if in_g == c_in:
        return image.contiguous()
    groups = conv.params["groups"]
    out = value.new_zeros((s, groups, in_g) + tuple(f.n))
    out[torch.arange(s, device=dev), channel // (out_ch // groups)] = image
    return out.view((s, c_in) + tuple(f.n))


#: Ops a one-value seed passes as one value (to the conv below it, where it becomes a stamp).
POINT_OPS = (
    "relu",
    "relu6",
    "nonlinear",
    "gate",
    "norm",
    "maxpool",
    "adaptive_maxpool",
    "batchnorm",
    "dropout",
    "identity",
    "scale",
)


def _at(
    walk: Walk,
    records: Dict[str, torch.Tensor],
    name: str,
    channel: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
) -> torch.Tensor:
    """A record's value for each seed at map position ``(y, x)``."""
    rows = walk.rows
    here = walk.rec.origin(name)
    if here is not None:
        here = here.index_select(0, rows)
        y, x = y - here[:, 0], x - here[:, 1]
    t = records[name]
    # A record in the shape of its statistics (a norm's) has size 1 where it is the same.
    c, y, x = (
        i if t.shape[d] > 1 else torch.zeros_like(i) for d, i in ((1, channel), (2, y), (3, x))
    )
    return t[rows, c, y, x]


def point_walk(
    walk: Walk, node: str, channel: torch.Tensor, value: torch.Tensor
) -> Tuple[str, torch.Tensor]:
    """The first steps of :func:`reverse_walk` for seeds that are one value each, in closed form.

    Seed ``s`` is ``value[s]`` at channel ``channel[s]`` and ``walk.position[s]`` of
    node ``node``'s output ``(C, H, W)``. Down a chain of single-input ops it stays
    one value: a ReLU rectifies it, a max pool (with switches) moves it to its
    switch, a batch norm scales it; the first convolution stamps its filter
    (:func:`_stamp`). That skips the ``S x C x H x W`` signals and the full
    transposed conv that dominate the cost of many seeds on a wide layer.
    Returns ``(name, signal)``: the node whose output ``signal`` (on its frame) is,
    for :func:`reverse_walk` to take on. Equal to the plain walk.
    """
    y, x, v = walk.position[:, 0].clone(), walk.position[:, 1].clone(), value.clone()
    n = walk.graph.node(node)
    rule = walk.rule
    while True:
        if n.op in ("relu", "relu6", "nonlinear"):
            v = by_rule(rule, v, partial(_at, walk, walk.rec.masks, n.name, channel, y, x))
        elif n.op == "gate" and walk.rec.held[n.name].shape[-2:] == (1, 1):
            held = walk.rec.held[n.name]
            c = channel if held.shape[1] > 1 else torch.zeros_like(channel)
            v = v * held[walk.rows.to(held.device), c, 0, 0].to(v.dtype)
        elif (
            n.op == "norm"
            and walk.rec.held[n.name].dim() == 4
            and not walk.graph.channels_last(n.name)
        ):
            v = v * _at(walk, walk.rec.held, n.name, channel, y, x).to(v.dtype)
            weight = norm_weight(n.spec, walk.graph.model, 4)
            if weight is not None:
                c, h, wd = walk.rec.shapes[n.name]
                v = v * weight.expand(1, c, h, wd)[0, channel, y, x].to(v.dtype)
        elif (
            n.op in ("maxpool", "adaptive_maxpool")
            and walk.unpool == "switches"
            and walk.graph.window_params(n) is not None
        ):
            flat = _at(walk, walk.rec.switches, n.name, channel, y, x)
            w_in = walk.extent(n.inputs[0])[1]
            y, x = flat // w_in, flat % w_in
        elif n.op == "batchnorm":
            v = v * batchnorm_scale(n, walk.graph.model).to(v.dtype)[channel]
        elif n.op == "scale" and n.params["factor"] is not None:
            v = v * n.params["factor"]
        elif n.op == "conv":
            return n.inputs[0], _stamp(walk, n, channel, y, x, v)
        elif n.op not in ("dropout", "identity"):
            f = walk.frame(n.name)
            dense = v.new_zeros((v.shape[0], walk.rec.shapes[n.name][0]) + tuple(f.n))
            o = walk.origin(n.name)
            y, x = y - o[:, 0], x - o[:, 1]
            dense[torch.arange(v.shape[0], device=v.device), channel, y, x] = v
            return n.name, dense
        n = walk.graph.node(n.inputs[0])
