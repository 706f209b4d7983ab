"""``--device cuda``: the scan, the projections (whole-image and crop recordings, windowed
reverse pass) and a report on the GPU equal the CPU's; two nccl processes under torchrun
equal one. Run where CUDA exists; they skip elsewhere, saying so."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import alexnet_like, random_seeds

from deconvviz import deconvolve
from deconvviz.cli import main
from deconvviz.data.builtin import synthetic_images
from deconvviz.data.source import ImageSource
from deconvviz.engine.net.layers import list_layers
from deconvviz.runs.report_run import build_report

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"
)


@needs_cuda
@pytest.mark.parametrize("mode", ["position", "max"])
def test_deconvolve_on_cuda_equals_the_cpu(mode):
    model = alexnet_like(31)
    x = torch.randn(3, 3, 45, 45, dtype=torch.float64)
    gpu_model = alexnet_like(31).cuda()
    for info in list_layers(model, (45, 45)):
        idx, feat, pos = random_seeds(info, 3, 12, info.index)
        kw = dict(image_index=idx, mode=mode, position=pos if mode == "position" else None)
        cpu = deconvolve(model, x, info.index, feat, **kw)
        gpu = deconvolve(gpu_model, x.cuda(), info.index, feat, **kw)
        assert gpu.projections.device.type == "cuda"
        torch.testing.assert_close(gpu.projections.cpu(), cpu.projections, rtol=0, atol=1e-10)
        torch.testing.assert_close(gpu.activation, cpu.activation, rtol=0, atol=1e-10)


def _source(n: int) -> ImageSource:
    images, labels = synthetic_images(n, seed=7)
    return ImageSource(
        description="gen",
        kind="builtin",
        split="test",
        labels=labels,
        class_names=[f"c{i}" for i in range(10)],
        images=images,
    )


@needs_cuda
def test_a_report_on_cuda_equals_the_cpus(tiny_checkpoint):
    from deconvviz.models.checkpoint import load_model

    model = load_model(str(tiny_checkpoint))
    src = _source(48)
    cpu = build_report(model, src, None, 4, batch_size=16, progress=False)
    gpu = build_report(
        load_model(str(tiny_checkpoint)), src, None, 4, batch_size=16, progress=False, device="cuda"
    )
    for L, a in cpu.layers.items():
        b = gpu.layers[L]
        assert np.array_equal(a.image_index, b.image_index)
        assert np.array_equal(a.position, b.position)
        np.testing.assert_allclose(b.activation, a.activation, rtol=1e-4, atol=1e-5)
        scale = float(np.abs(a.projection).max())
        np.testing.assert_allclose(b.projection, a.projection, rtol=0, atol=1e-4 * scale)


@needs_cuda
def test_report_command_on_cuda(tiny_checkpoint, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "report",
            "--model",
            str(tiny_checkpoint),
            "--data",
            "builtin",
            "--limit",
            "64",
            "--top",
            "3",
            "--device",
            "cuda",
            "--no-png",
            "--quiet",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "r" / "report.h5") as f:
        assert f["layer2/projection"].shape[:2] == (64, 3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than 2 CUDA devices here")
def test_two_nccl_processes_match_one(tiny_checkpoint, tmp_path):
    from test_report_distributed import _gloo_setup, one_and_two_processes

    data, launcher = _gloo_setup(tmp_path, 60, 3)
    one_and_two_processes(
        tmp_path,
        launcher,
        [
            "report",
            "--model",
            str(tiny_checkpoint),
            "--data",
            str(data),
            "--top",
            "4",
            "--batch-size",
            "8",
            "--no-png",
            "--quiet",
            "--device",
            "cuda",
        ],
    )
    with (
        h5py.File(tmp_path / "one" / "report.h5") as a,
        h5py.File(tmp_path / "two" / "report.h5") as b,
    ):
        assert b.attrs["world_size"] == 2
        for group in ("layer1", "layer2"):
            assert np.array_equal(a[group]["image_index"][()], b[group]["image_index"][()])
