"""Which features of two networks are the same feature: matching by what they respond to.

Two networks' features at one node are compared by the Pearson correlation, over the
same images, of their per-image maxima (what
:class:`~deconvviz.engine.statistics.MaximaRecorder` records in a report's scan).
:func:`match_features` pairs them one to one so that the summed correlation is the
largest possible (the optimal assignment, :func:`scipy.optimize.linear_sum_assignment`),
not greedily; pairs below a correlation threshold count as unmatched.
:func:`follow_back` chains the matches of consecutive checkpoints, following every
feature of the last one back through training (Zeiler & Fergus, Figure 4, matched
rather than assumed to keep its index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

__all__ = ["correlation_matrix", "Matching", "match_features", "follow_back", "MIN_CORRELATION"]

#: Pairs correlating less than this are reported as features without a match.
MIN_CORRELATION = 0.5


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation ``(Fa, Fb)`` float64 between the rows of ``a (Fa, N)`` and
    ``b (Fb, N)`` (the same N images, in the same order). A feature that takes one value
    on every image (it never fires, say) correlates 0 with everything."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"maxima over {x.shape[1]} and {y.shape[1]} images cannot be correlated")
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    nx = np.sqrt((x * x).sum(axis=1))
    ny = np.sqrt((y * y).sum(axis=1))
    c = x @ y.T
    with np.errstate(invalid="ignore", divide="ignore"):
        c = c / np.outer(nx, ny)
    c[~np.isfinite(c)] = 0.0
    return np.clip(c, -1.0, 1.0)


@dataclass
class Matching:
    """An optimal one-to-one matching of features ``a`` to features ``b``.

    ``a``, ``b``: ``(P,)`` int64 matched feature indices (sorted by correlation
    descending, ties by ``a``); ``correlation (P,)``; ``unmatched_a``, ``unmatched_b``:
    the features left without a partner (no partner left, or the best assignment
    pairs them below ``threshold``); ``matrix (Fa, Fb)``: the correlations matched.
    """

    a: np.ndarray
    b: np.ndarray
    correlation: np.ndarray
    unmatched_a: np.ndarray
    unmatched_b: np.ndarray
    threshold: float
    matrix: np.ndarray

    def partner_of_b(self, features_b: int) -> np.ndarray:
        """``(Fb,)``: the matched ``a`` feature of every ``b`` feature, -1 for none."""
        out = np.full(int(features_b), -1, dtype=np.int64)
        out[self.b] = self.a
        return out


def match_features(corr: np.ndarray, threshold: float = MIN_CORRELATION) -> Matching:
    """The one-to-one matching that maximises the summed correlation ``corr (Fa, Fb)``
    (``min(Fa, Fb)`` pairs, optimal), then pairs below ``threshold`` dropped."""
    from scipy.optimize import linear_sum_assignment

    corr = np.asarray(corr, dtype=np.float64)
    ra, rb = linear_sum_assignment(corr, maximize=True)
    r = corr[ra, rb]
    keep = r >= threshold
    ra, rb, r = ra[keep], rb[keep], r[keep]
    order = np.lexsort((ra, -r))
    ra, rb, r = ra[order].astype(np.int64), rb[order].astype(np.int64), r[order]
    return Matching(
        a=ra,
        b=rb,
        correlation=r,
        unmatched_a=np.setdiff1d(np.arange(corr.shape[0]), ra).astype(np.int64),
        unmatched_b=np.setdiff1d(np.arange(corr.shape[1]), rb).astype(np.int64),
        threshold=float(threshold),
        matrix=corr,
    )


def follow_back(maxima: Sequence[np.ndarray], threshold: float = MIN_CORRELATION):
    """Follow every feature of the last network back through the earlier ones.

    ``maxima``: per network (e.g. checkpoints in epoch order) ``(F_e, N)`` per-image
    maxima of one node over the same images. Consecutive networks are matched
    (:func:`match_features`); the chain of feature ``f`` of the last network is its
    partner in the one before, that one's partner in the one before that, and so on.
    Returns ``(chains (E, F_last) int64, correlation (E - 1, F_last) float64,
    matchings)``: ``chains[e, f]`` is the feature of network ``e`` on ``f``'s chain (-1
    once the chain breaks: no partner at or above ``threshold``), ``correlation[e, f]``
    that of the step from network ``e + 1`` back to ``e`` (NaN once broken), and
    ``matchings[e]`` the :class:`Matching` of network ``e`` (a) to ``e + 1`` (b).
    """
    E = len(maxima)
    if E < 2:
        raise ValueError("following features back needs at least two networks")
    last = np.asarray(maxima[-1]).shape[0]
    chains = np.full((E, last), -1, dtype=np.int64)
    corr = np.full((E - 1, last), np.nan)
    chains[-1] = np.arange(last)
    matchings: List[Matching] = [None] * (E - 1)
    for e in range(E - 2, -1, -1):
        c = correlation_matrix(maxima[e], maxima[e + 1])
        m = match_features(c, threshold)
        matchings[e] = m
        partner = m.partner_of_b(c.shape[1])
        alive = chains[e + 1] >= 0
        chains[e, alive] = partner[chains[e + 1, alive]]
        ok = chains[e] >= 0
        corr[e, ok] = c[chains[e, ok], chains[e + 1, ok]]
    return chains, corr, matchings
