"""What the per-feature statistics (issue 20) cost a report.

1. The scan: :func:`deconvviz.engine.scan.scan_topk` of the bundled network over the
   builtin test split (2,000 images, both layers, k = 9) with and without recording
   every image's maxima (:class:`~deconvviz.engine.statistics.MaximaRecorder`), in
   paired runs (the machine is noisy): min / median / max seconds of each.
2. The statistics: :func:`deconvviz.engine.statistics.feature_statistics` (AUROC and
   Mann-Whitney p per class, Holm, quantiles, histograms, labels) of VGG-16-sized layers:
   the 13 conv widths (64 ... 512, 4,224 features) over ``--images`` images with
   ``--classes`` classes, on synthetic ReLU maxima; seconds per layer width and in all.

    python benchmarks/bench_statistics.py --repeats 5 --images 50000 --classes 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def _span(values):
    return f"min {min(values):.3f} / median {statistics.median(values):.3f} / max {max(values):.3f}"


def bench_scan(repeats: int) -> None:
    import torch

    from deconvviz import load_data, load_model
    from deconvviz.engine.scan import layer_infos, scan_topk
    from deconvviz.engine.statistics import MaximaRecorder

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(progress=False)
    source = load_data("builtin", model).source
    infos = layer_infos(model, [1, 2], source.image_size)
    plain, recorded = [], []
    for r in range(repeats):
        for which in (0, 1) if r % 2 == 0 else (1, 0):  # alternate the order
            rec = (
                {i.index: MaximaRecorder(i.features, len(source)) for i in infos} if which else None
            )
            t0 = time.perf_counter()
            scan_topk(model, source, [1, 2], 9, maxima=rec)
            (recorded if which else plain).append(time.perf_counter() - t0)
    print(f"scan of {len(source)} images, layers 1 and 2, k = 9 (seconds):")
    print(f"  top-k only          {_span(plain)}")
    print(f"  top-k and maxima    {_span(recorded)}")
    print(f"  ratio of medians    {statistics.median(recorded) / statistics.median(plain):.3f}")


def bench_statistics(images: int, classes: int) -> None:
    from deconvviz.engine.statistics import feature_statistics

    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, images)
    seconds = {}
    for width in sorted(set(VGG16_WIDTHS)):
        maxima = np.maximum(rng.normal(size=(width, images)), 0).astype(np.float16)
        top = rng.integers(0, classes, (width, 9))
        t0 = time.perf_counter()
        feature_statistics(maxima, labels, classes, top)
        seconds[width] = time.perf_counter() - t0
        print(f"  {width:4d} features: {seconds[width]:.2f} s")
    total = sum(seconds[w] for w in VGG16_WIDTHS)
    print(
        f"statistics of VGG-16's 13 conv layers ({sum(VGG16_WIDTHS):,} features) over "
        f"{images:,} images, {classes} classes: {total:.1f} s; maxima stored: "
        f"{sum(VGG16_WIDTHS) * images * 2 / 1e9:.2f} GB (float16)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--skip-scan", action="store_true")
    args = ap.parse_args()
    if not args.skip_scan:
        bench_scan(args.repeats)
    bench_statistics(args.images, args.classes)


if __name__ == "__main__":
    main()
