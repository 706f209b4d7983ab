"""Images/s of decoding an image folder to 224x224 with 0, 1 and 2 --workers, cold and cached.

python benchmarks/bench_decode.py ../shared/datasets/imagenet-samples
"""

import os
import shutil
import sys
import tempfile
import time

from deconvviz.data.resolve import resolve_source

src = sys.argv[1]
res = {}
for _ in range(2):  # the second round shows the noise
    for w in (0, 1, 2):
        d = tempfile.mkdtemp(prefix="dvc", dir="/tmp")
        os.environ["DECONVVIZ_CACHE"] = d
        t = time.perf_counter()
        s = resolve_source(src, image_size=(224, 224), resize_size=256, workers=w)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        s2 = resolve_source(src, image_size=(224, 224), resize_size=256, workers=w)
        x = s2.read(0, len(s2))
        cached = time.perf_counter() - t
        res.setdefault(w, []).append((len(s) / cold, len(s) / cached))
        shutil.rmtree(d)
for w, v in res.items():
    print(
        f"workers {w}: cold "
        + ", ".join(f"{a:.0f}" for a, _ in v)
        + " img/s; cached "
        + ", ".join(f"{b:.0f}" for _, b in v)
        + " img/s"
    )
