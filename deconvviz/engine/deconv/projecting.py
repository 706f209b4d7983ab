"""Seeds projected from recordings, in chunks under the memory budget.

:func:`project_recorded` seeds S seeds of one node from a recording (whole images or
seeds' cones) and walks them back to the image; :func:`project_positions` records what
seeds at known positions need (each distinct image once, or each seed's cone, as
:func:`~.plan.plan` finds cheaper) and projects them, chunk by chunk into one result.
The public entry points are :mod:`.deconvnet`'s.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from ..net.geometry.patches import window_origins
from ..net.graph import Graph, GraphNode
from ..net.network import Layer
from .cone import record_cone
from .plan import MAX_BYTES, Plan, chunk_bytes, cone_groups, pass_bytes, plan, share_cones
from .projection import max_positions, seed_maps
from .record import GraphRecording, join_rows, record_whole
from .reverse import Walk, point_walk, reverse_walk
from .windows import paste

__all__ = ["project_recorded", "project_positions"]


def _canvas(graph: Graph, node: GraphNode, pos: torch.Tensor, windows: bool):
    """Size and per-seed top-left of what a projection is placed on: the seed's
    receptive-field window with ``windows``, else the whole image."""
    if windows:
        info = graph.info(node.name)
        return tuple(info.rf_size), window_origins(info, pos)
    return tuple(graph.input_size), torch.zeros_like(pos)


@torch.no_grad()
def project_recorded(
    graph: Graph,
    rec: GraphRecording,
    layer: Layer,
    rows: torch.Tensor,
    feature: torch.Tensor,
    *,
    mode: str = "max",
    rule: str = "deconvnet",
    unpool: str = "switches",
    position: Optional[torch.Tensor] = None,
    max_bytes: int = MAX_BYTES,
    walk: str = "whole",
    windows: bool = False,
    closed_form: bool = True,
    into: Optional[torch.Tensor] = None,
    into_rows: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed and project S seeds of node ``layer`` from a recording.

    Seed ``s`` is channel ``feature[s]`` of recorded row ``rows[s]`` (an image of a
    whole recording, the seed's own row of a cone recording): its strongest
    activation (``mode="max"``, first in row-major order), its whole map
    (``"map"``) or its value at ``position[s]`` (``"position"``); every other
    value is zero. A ``(B, C)`` node (a logit) is one position ``(0, 0)``.
    ``walk``: ``"cone"`` goes back inside each seed's cone (one-value seeds),
    ``"whole"`` over whole maps. Returns ``(projections (S, C_in, H, W), activation
    (S,), position (S, 2))``; with ``windows`` each projection is its seed's
    receptive-field window ``(S, C_in, rf_h, rf_w)`` (top-left ``rf_start +
    position * rf_jump``, zero outside the image) instead of the whole image.
    One-value seeds take the closed form of :func:`~.reverse.point_walk`
    down to the first conv (``closed_form=False``: the plain walk; the same result).
    ``into``: a zeroed ``(N, C_in, H, W)`` tensor (windows: ``rf_h, rf_w``) whose rows
    ``into_rows`` ``(S,)`` (distinct) receive the projections, returned in their place:
    the chunks of several calls land in one tensor without copies.
    """
    node = graph.node(layer)
    out = rec.outputs[node.name]
    flat = out.dim() == 2
    out4 = out.reshape(out.shape[0], out.shape[1], 1, 1) if flat else out
    device = out.device
    rows, feat = rows.to(device), feature.to(device)
    if flat and position is None:
        position = torch.zeros((rows.numel(), 2), dtype=torch.int64)
    pos_all = None if position is None else position.to(device).to(torch.int64)
    cone = walk == "cone" and mode != "map" and not flat
    # A walk over whole recordings takes the whole map wherever the cone is as large.
    frames = graph.frames(node.name, whole=not cone, hybrid=cone and rec.frames is None)
    assert frames is not None  # a cone walk is planned only where the cone exists
    per_seed, _ = pass_bytes(graph, node.name, frames, out.element_size(), False)
    chunk = max(1, int(max_bytes) // per_seed)
    first = graph.nodes[0]
    channels = graph.in_channels
    activations, positions = [], []
    single = into is None and rows.numel() <= chunk  # its result is the one chunk's, uncopied
    if into is None and not single:
        size = graph.info(node.name).rf_size if windows and not flat else graph.input_size
        into = out4.new_zeros((rows.numel(), channels) + tuple(size))
    if into_rows is None:
        into_rows = torch.arange(rows.numel())
    result = into
    weights: Dict = {}  # the convs' weights as the walks use them, made once for all chunks
    for c0 in range(0, rows.numel(), chunk):
        sl = slice(c0, c0 + chunk)
        r, f = rows[sl], feat[sl]
        if mode == "map" or flat:
            seeds, act, pos = seed_maps(out4, r, f, mode, None if pos_all is None else pos_all[sl])
            if flat:
                seeds = seeds.reshape(seeds.shape[0], -1)
        else:
            if mode == "max":
                _, act, pos = max_positions(out, r, f)
            else:
                assert pos_all is not None  # mode "position" comes with positions
                pos = pos_all[sl]
                here = rec.origin(node.name)
                at = pos if here is None else pos - here.index_select(0, r.to(here.device))
                act = out[r, f, at[:, 0], at[:, 1]]
        w = Walk(graph, rec, r, pos, frames, rule, unpool, weights=weights)
        if mode != "map" and not flat and closed_form:
            start, signal = point_walk(w, node.name, f, act)
        elif mode != "map" and not flat and cone:
            seeds = out.new_zeros((r.numel(), out.shape[1], 1, 1))
            seeds[torch.arange(r.numel(), device=device), f, 0, 0] = act
            start, signal = node.name, seeds
        elif mode != "map" and not flat:
            start, signal = node.name, seed_maps(out, r, f, "position", pos)[0]
        else:
            start, signal = node.name, seeds
        g = reverse_walk(w, start, signal)
        size, canvas = _canvas(graph, node, pos.cpu(), windows)
        f_in = frames.get(first.name)
        whole_in = f_in is None or f_in.whole
        here = None if single else into_rows[sl]
        if whole_in and not windows:  # the whole image already
            if single:
                result = g
            else:
                assert result is not None and here is not None
                result[here.to(result.device)] = g
        else:
            origin = (
                torch.zeros_like(canvas) if f_in is None or f_in.whole else f_in.origin(pos.cpu())
            )
            result = paste(g, origin, canvas, size, out=result, rows=here)
        activations.append(act)
        positions.append(pos)
    if not activations:
        size = graph.info(node.name).rf_size if windows and not flat else graph.input_size
        return (
            out4.new_zeros((0, channels) + tuple(size)) if result is None else result,
            out4.new_zeros(0),
            torch.zeros((0, 2), dtype=torch.int64),
        )
    assert result is not None  # at least one chunk
    return result, join_rows(activations), join_rows(positions)


def _place(act, sel: torch.Tensor, a: torch.Tensor, n: int) -> torch.Tensor:
    """Chunk ``a`` into rows ``sel`` of the ``n`` seeds' activations (made on first use)."""
    if act is None:
        act = a.new_empty(n)  # every row is some chunk's
    act[sel.to(a.device)] = a
    return act


@torch.no_grad()
def project_positions(
    graph: Graph,
    images: torch.Tensor,
    layer: Layer,
    image_index: torch.Tensor,
    feature: torch.Tensor,
    position: torch.Tensor,
    *,
    rule: str = "deconvnet",
    unpool: str = "switches",
    windows: bool = False,
    max_bytes: int = MAX_BYTES,
    how: Optional[Plan] = None,
    groups: Optional[list] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project S seeds at known positions of node ``layer``: ``(projections, activation (S,))``.

    Seed ``s`` is channel ``feature[s]`` at ``position[s]`` of image
    ``images[image_index[s]]`` (model input). Records each distinct image once, or
    each seed's cone, whichever costs fewer multiply-adds (``how`` forces a
    :class:`~.plan.Plan`), in chunks under ``max_bytes``; projections as
    :func:`project_recorded` returns them (``windows``: receptive-field windows).
    ``groups``: the seeds' :func:`~.plan.share_cones` groups, where the caller has made them.
    """
    node = graph.check_seed(layer)
    masks = rule != "deconvnet"
    idx = image_index.to(torch.int64)
    pos = position.to(torch.int64)
    used, local = torch.unique(idx, return_inverse=True)
    if how is None:
        groups, cost = cone_groups(graph, node, idx, pos)
        how = plan(graph, node.name, "position", idx.numel(), used.numel(), cost)
    elem = images.element_size()
    size = graph.info(node.name).rf_size if windows else graph.input_size
    if idx.numel() == 0:
        return images.new_zeros((0, images.shape[1]) + tuple(size)), images.new_zeros(0)
    # Every chunk's projections land in their rows of one zeroed result.
    proj = images.new_zeros((idx.numel(), images.shape[1]) + tuple(size))
    act = None

    def back(rec: GraphRecording, rows: torch.Tensor, sel: torch.Tensor, walk: str):
        """Seeds ``sel`` (rows ``rows`` of ``rec``) projected into their rows of ``proj``:
        their activations."""
        return project_recorded(
            graph,
            rec,
            node.name,
            rows,
            feature[sel],
            mode="position",
            rule=rule,
            unpool=unpool,
            position=pos[sel],
            max_bytes=max_bytes,
            walk=walk,
            windows=windows,
            into=proj,
            into_rows=sel,
        )[1]

    if how.record == "whole":
        # The distinct images in chunks whose recordings fit the budget.
        _, per_image = pass_bytes(
            graph, node.name, graph.frames(node.name, whole=True), elem, masks
        )
        step = max(1, int(max_bytes) // per_image)
        for c0 in range(0, used.numel(), step):
            sel = ((local >= c0) & (local < c0 + step)).nonzero().view(-1)
            chunk = used[c0 : c0 + step].to(images.device)
            rec = record_whole(graph, images[chunk], [node.name], masks)
            act = _place(act, sel, back(rec, local[sel] - c0, sel, how.walk), idx.numel())
        assert act is not None  # at least one seed, so one chunk
        return proj, act
    # Seeds of one image with overlapping cones share a recording (a block of positions);
    # groups of one block size are recorded together, in chunks under the budget.
    walk_bytes, _ = pass_bytes(graph, node.name, graph.frames(node.name), elem, masks)
    by_block: Dict[Tuple[int, int], list] = {}
    for g in groups if groups is not None else share_cones(graph, node.name, idx, pos):
        by_block.setdefault(g[0], []).append(g)
    for block in sorted(by_block):
        _, rec_bytes = pass_bytes(
            graph, node.name, graph.frames(node.name, block=block), elem, masks
        )
        cap = chunk_bytes(rec_bytes + walk_bytes, max_bytes)
        todo = by_block[block]
        while todo:
            take, used_bytes = 0, 0
            while take < len(todo):
                more = rec_bytes + walk_bytes * len(todo[take][3])
                if take and used_bytes + more > cap:
                    break
                take, used_bytes = take + 1, used_bytes + more
            chunk, todo = todo[:take], todo[take:]
            sel = torch.tensor([s for g in chunk for s in g[3]], dtype=torch.int64)
            rows = torch.tensor([r for r, g in enumerate(chunk) for _ in g[3]], dtype=torch.int64)
            rec = record_cone(
                graph,
                images,
                node.name,
                torch.tensor([g[1] for g in chunk], device=images.device),
                torch.tensor([g[2] for g in chunk], dtype=torch.int64),
                masks,
                block=block,
                max_bytes=max_bytes,
            )
            act = _place(act, sel, back(rec, rows, sel, "cone"), idx.numel())
    assert act is not None  # at least one seed, so one chunk
    return proj, act
