"""Seconds to write the web report (issue 11) of a VGG-16-sized report, and of a real one.

A synthetic report with VGG-16's 13 conv layers at 224x224 (4,224 features, receptive
fields from 3x3 to 212x212, shapes from ``layer_infos`` of torchvision's ``vgg16()``
structure), k = 9, smooth random projections and patches, and ``--images`` distinct
224x224 kept images, is written with :class:`deconvviz.render.web.SiteWriter` one layer
at a time (as ``deconvviz report --html`` does). ``--features N`` writes only the first
N features of every layer and scales the time up per layer (the cost is per feature).
With ``--report FILE`` it times ``write_site`` on that report file instead.

    python benchmarks/bench_web.py --features 32
    python benchmarks/bench_web.py --report outputs/report/report.h5
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _smooth(rng, shape, dtype):
    """Random fields with some spatial structure (compress like real tiles, not noise)."""
    small = rng.standard_normal(shape[:-2] + (max(1, shape[-2] // 4), max(1, shape[-1] // 4)))
    big = small.repeat(4, axis=-2).repeat(4, axis=-1)[..., : shape[-2], : shape[-1]]
    out = np.zeros(shape, dtype)
    out[..., : big.shape[-2], : big.shape[-1]] = big
    return out


def synthetic(features_cap, images, k=9, seed=0):
    import torchvision

    from deconvviz.engine.scan import layer_infos
    from deconvviz.store.report_h5 import ImageTable, LayerReport

    rng = np.random.default_rng(seed)
    infos = layer_infos(torchvision.models.vgg16(), None, (224, 224))
    M = images
    pix = (_smooth(rng, (M, 3, 224, 224), np.float32) * 40 + 128).clip(0, 255).astype(np.uint8)
    table = ImageTable(
        index=np.arange(M, dtype=np.int64) * 7,
        pixels=pix,
        label=rng.integers(0, 1000, M),
        path=[f"/data/img{i}.JPEG" for i in range(M)],
    )
    attrs = {
        "format": "deconvviz-report",
        "format_version": 2,
        "package_version": "bench",
        "checkpoint_path": "vgg16 (random)",
        "data_source": "synthetic",
        "split": "",
        "num_images": 50000,
        "command_line": "benchmarks/bench_web.py",
        "top_k": k,
        "image_size": [224, 224],
        "class_names": "[]",
    }

    def layers():
        for info in infos:
            F_ = min(info.features, features_cap or info.features)
            rh, rw = info.rf_size
            rows = rng.integers(0, M, (F_, k))
            oh, ow = info.output_size
            pos = np.stack([rng.integers(0, oh, (F_, k)), rng.integers(0, ow, (F_, k))], -1)
            jy, jx = info.rf_jump
            sy, sx = info.rf_start
            oy, ox = pos[..., 0] * jy + sy, pos[..., 1] * jx + sx
            box = np.stack(
                [
                    np.clip(oy, 0, 224),
                    np.clip(ox, 0, 224),
                    np.clip(oy + rh, 0, 224),
                    np.clip(ox + rw, 0, 224),
                ],
                -1,
            )
            act = np.sort(rng.random((F_, k)).astype(np.float32) * 10, axis=1)[:, ::-1].copy()
            act[::50] = 0  # some features never fire
            yield (
                info.features,
                LayerReport(
                    layer=info.index,
                    path=str(info.path),
                    output_size=info.output_size,
                    rf_size=info.rf_size,
                    rf_jump=info.rf_jump,
                    rf_start=info.rf_start,
                    activation=act,
                    image_index=table.index[rows],
                    label=table.label[rows],
                    position=pos,
                    projection=_smooth(rng, (F_, k, 3, rh, rw), np.float16),
                    patch=(_smooth(rng, (F_, k, 3, rh, rw), np.float32) * 40 + 128)
                    .clip(0, 255)
                    .astype(np.uint8),
                    patch_box=box,
                    patch_origin=np.stack([oy, ox], -1),
                ),
            )

    return attrs, table, layers()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=32, help="features per layer (0: all)")
    ap.add_argument("--images", type=int, default=500, help="distinct kept images")
    ap.add_argument("--report", default=None, help="time write_site on this report file")
    ap.add_argument("--keep", default=None, help="write the site here and keep it")
    a = ap.parse_args()
    out = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_web"))
    try:
        if a.report:
            from deconvviz.render.web import write_site

            t = time.perf_counter()
            index = write_site(a.report, out)
            dt = time.perf_counter() - t
            written = [p for p in index.parent.rglob("*") if p.is_file()]
            megabytes = sum(p.stat().st_size for p in written) / 1e6
            print(f"write_site {a.report}: {dt:.2f} s, {len(written)} files, {megabytes:.1f} MB")
            return
        from deconvviz.render.web import SiteWriter

        attrs, table, layers = synthetic(a.features, a.images)
        t = time.perf_counter()
        w = SiteWriter(out / "site", attrs, table, "benchmark")
        t_img = time.perf_counter() - t
        print(f"{a.images} whole images (224x224): {t_img:.2f} s")
        total = 0.0
        for F_all, lr in layers:
            t = time.perf_counter()
            w.add_layer(lr)
            dt = time.perf_counter() - t
            est = dt * F_all / lr.features
            total += est
            per_feature = 1e3 * dt / lr.features
            print(
                f"layer {lr.layer:2d}: {lr.features:3d} of {F_all} features, "
                f"rf {lr.rf_size[0]:3d}: {dt:6.2f} s -> {est:6.1f} s for all {F_all} "
                f"({per_feature:.1f} ms per feature)",
                flush=True,
            )
        w.finish()
        files = sum(1 for p in (out / "site").rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in (out / "site").rglob("*") if p.is_file())
        print(
            f"all 4,224 features, k = 9: {total:.0f} s (+ {t_img:.1f} s for {a.images} images); "
            f"this run wrote {files} files, {size / 1e6:.0f} MB; "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
    finally:
        if not a.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
