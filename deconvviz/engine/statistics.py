"""What a feature responds to over a whole data set: per-image maxima and their statistics.

The top-k scan (:mod:`.topk`) already reduces every feature map to its maximum over
positions, one value per (image, feature). :class:`MaximaRecorder` keeps all of
them (float16, ``(F, N)`` per layer: 0.42 GB for VGG-16's 4,224 conv features over
50,000 images), in the same pass. :func:`feature_statistics` turns them, with the
data set's own labels, into what each feature detects:

* firing rate (share of images whose maximum is above 0), mean and quantiles of the
  maxima, and a histogram;
* for each class ``c``, the AUROC of the maximum as a detector of ``c`` (the
  probability that an image of ``c`` scores higher than one of another class, ties
  counting one half: the Mann-Whitney ``U`` of the class over ``n_c (N - n_c)``) and
  the one-sided Mann-Whitney p-value (normal approximation with tie and continuity
  correction, as :func:`scipy.stats.mannwhitneyu` with ``alternative="greater"``,
  ``method="asymptotic"``), Holm-corrected over the classes tested for that feature
  (Holm rather than Bonferroni: it controls the same family-wise error under any
  dependence and rejects at least as often);
* the share of the feature's top k images in each class;
* a label: the class with the highest AUROC among the significant ones (corrected
  p below ``alpha``), or no class (``-1``) where none is.

Everything is a function of the stored float16 maxima and the labels, so a reader
of the report file can recompute each number from the file.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

__all__ = [
    "MaximaRecorder",
    "feature_statistics",
    "auroc_and_p",
    "holm",
    "gather_maxima",
    "QUANTILES",
    "HISTOGRAM_BINS",
    "ALPHA",
    "NO_CLASS",
]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 32
ALPHA = 0.05
NO_CLASS = -1
_F16_MAX = float(np.finfo(np.float16).max)
_CHUNK = 64  # features ranked together (bounds the float64 temporaries)


class MaximaRecorder:
    """Every image's maximum over positions for every feature of one layer.

    ``values``: ``(F, N)`` float16, ``-inf`` where an image was not (yet) seen by this
    process. Call it with ``(maxima (F, n) float32, offset)`` for the images
    ``offset .. offset + n - 1`` (what the top-k scan computes anyway). Values beyond
    float16's range are clamped to it (a maximum of 65,504 still ranks first).
    """

    def __init__(self, features: int, num_images: int):
        self.values = torch.full(
            (int(features), int(num_images)), float("-inf"), dtype=torch.float16
        )

    def __call__(self, maxima: torch.Tensor, offset: int) -> None:
        n = maxima.shape[1]
        self.values[:, offset : offset + n] = maxima.clamp(-_F16_MAX, _F16_MAX).to(torch.float16)


def gather_maxima(values: torch.Tensor, device="cpu") -> torch.Tensor:
    """Combine the ranks' :class:`MaximaRecorder` values of one layer under ``torchrun``
    (each rank saw its own batches, ``-inf`` elsewhere): the elementwise maximum, on
    every rank. Needs an initialised ``torch.distributed`` group."""
    import torch.distributed as dist

    full = values.to(device=device, dtype=torch.float32)
    dist.all_reduce(full, op=dist.ReduceOp.MAX)
    return full.cpu().to(torch.float16)


def _sort_keys(x: np.ndarray) -> Optional[np.ndarray]:
    """``uint16`` keys in the order of the float16 values ``x`` (-0 as +0), or None where
    ``x`` is not float16 or holds a NaN (integer operations: float16 arithmetic is slow)."""
    if x.dtype != np.float16:
        return None
    bits = x.view(np.uint16)
    if ((bits & 0x7FFF) > 0x7C00).any():  # NaN
        return None
    bits = np.where(bits == 0x8000, np.uint16(0), bits)
    return np.where(bits & 0x8000, ~bits, bits | 0x8000)


def _key_values(keys: np.ndarray) -> np.ndarray:
    """The float64 values of :func:`_sort_keys`' keys (its inverse)."""
    bits = np.where(keys & 0x8000, keys & 0x7FFF, ~keys).astype(np.uint16)
    return bits.view(np.float16).astype(np.float64)


def _sorted_quantiles(keys: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """``(F, Q)`` quantiles of the values of each sorted row of :func:`_sort_keys`' keys
    ``(F, N)``, N >= 1, as :func:`numpy.quantile`'s default (linear) method computes them,
    its lerp included; only the keys it reads become float64."""
    n = keys.shape[1]
    virtual = (n - 1) * np.asarray(levels, dtype=np.float64)
    prev = np.floor(virtual)
    g = virtual - prev
    prev = prev.astype(np.intp)
    a = _key_values(keys[:, prev])
    b = _key_values(keys[:, np.minimum(prev + 1, n - 1)])
    diff = b - a
    out = a + diff * g
    np.subtract(b, diff * (1 - g), out=out, where=g >= 0.5)
    return out


def _ranks_and_ties(x: np.ndarray, keys: Optional[np.ndarray] = None, order=None):
    """Midranks (1-based) of each row of ``x (f, n)`` and each row's tie term
    ``sum(t^3 - t)`` over its groups of equal values (``keys``, ``order``: its
    :func:`_sort_keys` and their stable argsort, where the caller has them)."""
    f, n = x.shape
    keys = _sort_keys(x) if keys is None else keys
    # Sort 16-bit keys where there are (numpy sorts those by radix, some 15x faster than
    # float64), else the float64 values; the ranks are the same.
    x = keys if keys is not None else x.astype(np.float64, copy=False)
    if order is None:
        order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, 1)
    new = np.ones((f, n), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    starts = np.flatnonzero(new.ravel())
    lengths = np.diff(np.append(starts, f * n))
    first = starts % n  # position in the row, 0-based
    mid = first + (lengths + 1) / 2.0
    ranks = np.empty((f, n), dtype=np.float64)
    np.put_along_axis(ranks, order, np.repeat(mid, lengths).reshape(f, n), 1)
    t = lengths.astype(np.float64)
    ties = np.bincount(starts // n, weights=t**3 - t, minlength=f)
    return ranks, ties


def auroc_and_p(maxima: np.ndarray, labels: np.ndarray, num_classes: int, _sorted=None):
    """``(auroc (F, C), p (F, C))`` of each row of ``maxima (F, N)`` as a detector of each
    class, over the images with a label in ``0 .. C-1`` (others left out).

    AUROC = U / (n_c (N - n_c)) with U the Mann-Whitney statistic of the class's images
    (ties count one half); p: one-sided (the class scores higher), normal approximation
    with tie and continuity correction. NaN where the class has no image or every
    labelled image is of it; p is 1 where every value of the feature is equal.
    (``_sorted``: the rows' sort keys and their stable argsort, where every image is
    labelled and the caller has them.)
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep = (labels >= 0) & (labels < num_classes)
    lab = labels[keep]
    F_ = maxima.shape[0]
    n = int(lab.shape[0])
    n1 = np.bincount(lab, minlength=num_classes).astype(np.float64)  # (C,)
    n2 = n - n1
    auroc = np.full((F_, num_classes), np.nan)
    p = np.full((F_, num_classes), np.nan)
    valid = (n1 > 0) & (n2 > 0)
    if n < 2 or not valid.any():
        return auroc, p
    cls = (np.arange(_CHUNK, dtype=np.int64) * num_classes)[:, None] + lab
    whole = _sorted is not None and bool(keep.all())
    for f0 in range(0, F_, _CHUNK):
        x = np.asarray(maxima[f0 : f0 + _CHUNK])[:, keep]
        if whole:
            keys, order = (a[f0 : f0 + _CHUNK] for a in _sorted)
            ranks, ties = _ranks_and_ties(x, keys, order)
        else:
            ranks, ties = _ranks_and_ties(x)
        f = x.shape[0]
        # Rank sums per class by counting (a one-hot product would hold N x C floats:
        # 0.4 GB for 50,000 ImageNet images); exact, the sums are multiples of 1/2.
        sums = np.bincount(
            cls[:f].ravel(), weights=ranks.ravel(), minlength=f * num_classes
        ).reshape(f, num_classes)
        u = sums - n1 * (n1 + 1) / 2.0  # (f, C)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = u / (n1 * n2)
            var = n1 * n2 / 12.0 * ((n + 1) - ties[:, None] / (n * (n - 1.0)))
            z = (u - n1 * n2 / 2.0 - 0.5) / np.sqrt(var)
            # The upper tail without cancellation: Phi(-z) (torch's, not scipy's: importing
            # scipy.special costs a report 0.2 s).
            upper = torch.special.ndtr(torch.from_numpy(-z)).numpy()
            pv = np.where(var > 0, upper, 1.0)
        auroc[f0 : f0 + _CHUNK] = np.where(valid, a, np.nan)
        p[f0 : f0 + _CHUNK] = np.where(valid, pv, np.nan)
    return auroc, p


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down correction of each row of ``p (F, C)`` over its non-NaN entries
    (the classes tested); NaN stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    for f in range(p.shape[0]):
        idx = np.flatnonzero(~np.isnan(p[f]))
        if idx.size == 0:
            continue
        order = idx[np.argsort(p[f, idx], kind="stable")]
        m = order.size
        adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[f, order]))
        out[f, order] = adj
    return out


def feature_statistics(
    maxima,
    labels,
    num_classes: int,
    top_labels: Optional[np.ndarray] = None,
    *,
    alpha: float = ALPHA,
    quantiles: Sequence[float] = QUANTILES,
    bins: int = HISTOGRAM_BINS,
) -> dict:
    """The statistics of one layer from its per-image maxima, as a dict of the fields of
    :class:`deconvviz.store.statistics_h5.FeatureStatistics` (which stores and reads them).

    ``maxima``: ``(F, N)`` (float16 as recorded; computed in float64 from those
    values); ``labels``: ``(N,)`` int, ``-1`` for unlabelled images (left out of the
    class tests); ``top_labels``: ``(F, k)`` labels of each feature's top k (for
    :attr:`FeatureStatistics.topk_share`; zeros when None or ``k = 0``).
    """
    m16 = np.asarray(maxima, dtype=np.float16)
    F_, N = m16.shape
    C = int(num_classes)
    x = m16.astype(np.float64)
    keys = _sort_keys(m16) if N and F_ else None
    # Each row in order by sorting its 16-bit keys (a radix sort): the quantiles are then
    # read off, instead of selected from the float64 values (2-3x the time), and the
    # same order gives the ranks of the class tests.
    order = None if keys is None else np.argsort(keys, axis=1, kind="stable")
    ks = None if keys is None else np.take_along_axis(keys, order, 1)
    if N:
        firing = (x > 0).mean(axis=1)
        mean = x.mean(axis=1)
        if ks is not None:
            q = _sorted_quantiles(ks, quantiles)
        else:
            q = np.quantile(x, list(quantiles), axis=1).T if F_ else np.zeros((0, len(quantiles)))
    else:
        firing, mean = np.zeros(F_), np.zeros(F_)
        q = np.zeros((F_, len(quantiles)))
    hist = np.zeros((F_, bins), dtype=np.int64)
    edges = np.zeros((F_, bins + 1), dtype=np.float64)
    for f in range(F_):
        if ks is not None:
            lo, hi = (float(v) for v in _key_values(ks[f, [0, -1]]))
        else:
            lo, hi = (float(x[f].min()), float(x[f].max())) if N else (0.0, 0.0)
        if hi <= lo:
            hi = lo + 1.0
        if ks is None:
            hist[f], edges[f] = np.histogram(x[f], bins=bins, range=(lo, hi))
            continue
        # numpy.histogram's bins from the sorted values: [e_i, e_i+1), the last closed
        # (its edges, and its counts: it corrects each value's bin against the edges).
        edges[f] = np.linspace(lo, hi, bins + 1)
        at = np.searchsorted(_key_values(ks[f]), edges[f], side="left")
        at[-1] = N  # every value is <= hi, the maximum
        hist[f] = np.diff(at)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if lab.shape[0] != N:
        raise ValueError(f"{lab.shape[0]} labels for {N} images")
    auroc, p = auroc_and_p(m16, lab, C, None if keys is None else (keys, order))
    p_adj = holm(p)
    share = np.zeros((F_, C))
    if top_labels is not None and np.asarray(top_labels).size and C:
        tl = np.asarray(top_labels, dtype=np.int64)
        k = tl.shape[1]
        for c in range(C):
            share[:, c] = (tl == c).sum(axis=1) / k
    label = np.full(F_, NO_CLASS, dtype=np.int64)
    label_auroc = np.full(F_, np.nan)
    label_p = np.full(F_, np.nan)
    for f in range(F_):
        sig = np.flatnonzero(p_adj[f] < alpha) if C else np.zeros(0, np.int64)
        if sig.size:
            c = int(sig[np.argmax(auroc[f, sig])])  # argmax: ties to the lower class
            label[f], label_auroc[f], label_p[f] = c, auroc[f, c], p_adj[f, c]
    return dict(
        maxima=m16,
        firing_rate=firing,
        mean=mean,
        quantiles=np.asarray(q, np.float64),
        quantile_levels=np.asarray(quantiles, np.float64),
        histogram=hist,
        histogram_edges=edges,
        class_count=np.bincount(lab[(lab >= 0) & (lab < C)], minlength=C).astype(np.int64),
        auroc=auroc,
        p_value=p,
        p_adjusted=p_adj,
        topk_share=share,
        label=label,
        label_auroc=label_auroc,
        label_p=label_p,
        alpha=float(alpha),
        correction="holm",
    )
