"""Per-feature statistics over the whole scan (issue 20): the maxima recorded in the top-k
pass, AUROC and Mann-Whitney p per class against scipy and a brute-force count, Holm's
correction on a textbook case, labels on a planted unit, the file read back, old
formats, the Python route and the ``features`` command."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_close
from scipy.stats import mannwhitneyu
from torch import nn

from deconvviz.cli import main
from deconvviz.data.source import ImageSource
from deconvviz.engine.statistics import QUANTILES, auroc_and_p, feature_statistics, holm
from deconvviz.errors import DeconvvizError
from deconvviz.explore import Report
from deconvviz.runs.report_run import write_report
from deconvviz.store.report_read import read_report_h5

CLASSES = ["grey", "red", "blue"]


def planted_model() -> nn.Sequential:
    """Feature 0 fires only on red (R - G - B - 0.1 > 0 where red dominates); feature 1
    is the constant 0.5 (it detects nothing); feature 2 is the brightness R + G + B (its
    maximum is the same grey background in every image: nothing either)."""
    conv = nn.Conv2d(3, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(
            torch.tensor([[1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).view(3, 3, 1, 1)
        )
        conv.bias.copy_(torch.tensor([-0.1, 0.5, 0.0]))
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)).eval()
    model.meta = {"normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}
    return model


def planted_source(per_class: int = 20) -> ImageSource:
    """Grey images with a square: red squares for class 1, blue for 2, darker grey for 0;
    the squares' brightness varies from image to image, so values are not all tied."""
    g = torch.Generator().manual_seed(0)
    n = 3 * per_class
    labels = torch.arange(n) % 3
    images = torch.full((n, 3, 8, 8), 100, dtype=torch.uint8)
    level = (120 + 120 * torch.rand(n, generator=g)).to(torch.uint8)
    for i in range(n):
        y, x = (
            int(torch.randint(0, 4, (1,), generator=g)),
            int(torch.randint(0, 4, (1,), generator=g)),
        )
        colour = {0: (60, 60, 60), 1: (int(level[i]), 20, 20), 2: (20, 20, int(level[i]))}[
            int(labels[i])
        ]
        images[i, :, y : y + 4, x : x + 4] = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)
    return ImageSource(
        description="planted",
        kind="builtin",
        split="test",
        labels=labels,
        class_names=CLASSES,
        images=images,
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    model, source = planted_model(), planted_source()
    write_report(model, source, out, None, 4, png=False, progress=False, batch_size=7)
    return out / "report.h5", model, source


def _brute_auroc(pos, neg):
    return ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
        len(pos) * len(neg)
    )


def test_auroc_and_p_match_scipy_and_a_brute_force_count():
    rng = np.random.default_rng(0)
    # Coarse values make many ties; label -1 is unlabelled and left out; class 3 is empty.
    x = (np.round(rng.normal(size=(6, 150)) * 3) / 3).astype(np.float16)
    x[5] = 1.0  # every value tied
    labels = rng.integers(-1, 3, 150)
    auroc, p = auroc_and_p(x, labels, 4)
    keep = labels >= 0
    want_a, want_p = np.full((6, 4), np.nan), np.full((6, 4), np.nan)
    for f in range(6):
        for c in range(3):
            pos = x[f][keep & (labels == c)].astype(np.float64)
            neg = x[f][keep & (labels != c)].astype(np.float64)
            want_a[f, c] = _brute_auroc(pos, neg)
            want_p[f, c] = (
                1.0
                if f == 5
                else mannwhitneyu(pos, neg, alternative="greater", method="asymptotic").pvalue
            )
    assert np.array_equal(np.isnan(auroc), np.isnan(want_a)) and np.isnan(auroc[:, 3]).all()
    ok = ~np.isnan(want_a)
    assert_close(torch.from_numpy(auroc[ok]), torch.from_numpy(want_a[ok]))
    assert_close(torch.from_numpy(p[ok]), torch.from_numpy(want_p[ok]))
    assert (auroc[5, :3] == 0.5).all()


def test_float16_maxima_rank_as_their_float64_values():
    """The recorded float16 maxima rank by 16-bit keys: the same numbers, to the bit, as
    their float64 values (ties, -0 equal to +0, -inf first)."""
    rng = np.random.default_rng(1)
    x = (np.round(rng.normal(size=(5, 400)) * 4) / 4).astype(np.float16)
    x[0, :50] = -0.0
    x[1, :7] = -np.inf
    x[2] = np.float16(2.5)
    x[3, ::3] = 0.0
    labels = rng.integers(-1, 4, 400)
    got = auroc_and_p(x, labels, 4)
    want = auroc_and_p(x.astype(np.float64), labels, 4)
    for g, w in zip(got, want):
        assert np.array_equal(g, w, equal_nan=True)


def test_quantiles_read_off_sorted_keys_equal_numpys():
    """The quantiles of float16 maxima (read off their sorted 16-bit keys) are
    numpy.quantile's of the float64 values, to the bit: ties, -0, negatives, one image."""
    rng = np.random.default_rng(2)
    for n in (1, 2, 5, 400):
        x = (np.round(rng.normal(size=(4, n)) * 4) / 4).astype(np.float16)
        x[0, : n // 2] = -0.0
        x[1] = -np.abs(x[1]) - 1
        x[2, -1] = np.float16(60000.0)
        got = feature_statistics(x, rng.integers(0, 3, n), 3)["quantiles"]
        want = np.quantile(x.astype(np.float64), QUANTILES, axis=1).T
        assert np.array_equal(got, want)


def test_holm_on_a_textbook_case():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, then max(0.04, 0.06).
    p = np.array([[0.01, 0.04, 0.03, 0.005], [0.5, np.nan, 0.2, 0.9]])
    got = holm(p)
    assert np.allclose(got[0], [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)
    # NaN is not a test: m = 3; 0.2, 0.5, 0.9 times 3, 2, 1: 0.6, 1.0, then max(0.9, 1.0).
    assert np.allclose(got[1, [0, 2, 3]], [1.0, 0.6, 1.0], rtol=0, atol=1e-15)
    assert np.isnan(got[1, 1])


def test_the_planted_unit_is_labelled_with_its_class(planted):
    path, _, _ = planted
    rep = Report(path)
    s = rep.layer(1).stats
    assert rep.has_statistics and s.correction == "holm" and s.alpha == 0.05
    # Feature 0 fires on red squares only: every red image outranks every other image.
    assert s.label[0] == 1 and s.auroc[0, 1] == 1.0 and s.label_p[0] < 1e-6
    assert s.topk_share[0, 1] == 1.0 and s.firing_rate[0] == pytest.approx(1 / 3)
    # The constant feature detects nothing: AUROC 0.5 everywhere, p 1, "no class".
    assert s.label[1] == -1 and (s.auroc[1] == 0.5).all() and (s.p_adjusted[1] == 1.0).all()
    assert rep.feature(1, 1).label == "no class" and rep.feature(1, 0).label == "red"
    assert [f.index for f in rep.features_for("RED")][0] == 0
    assert all(f.index != 1 for f in rep.features_for("red"))


def test_stored_statistics_are_those_of_the_stored_maxima(planted):
    path, model, source = planted
    lr = read_report_h5(path).layers[1]
    s = lr.stats
    # The maxima are the network's own per-image maxima (float16: within one float16 step).
    with torch.no_grad():
        import copy

        direct = copy.deepcopy(model).double()(source.all_images().double() / 255.0)
        direct = direct.amax(dim=(2, 3)).t()
    m = torch.from_numpy(s.maxima.astype(np.float32))
    assert m.shape == (3, 60)
    assert float((m.double() - direct).abs().max()) <= 2**-10 * float(direct.abs().max())
    # ... and the strongest one is each feature's top-1 activation.
    assert np.array_equal(s.maxima.max(axis=1), lr.activation[:, 0].astype(np.float16))
    # Every statistic recomputed independently from the stored maxima and the labels.
    x = torch.from_numpy(s.maxima.astype(np.float64))
    assert_close(torch.from_numpy(s.firing_rate), (x > 0).double().mean(dim=1))
    assert_close(torch.from_numpy(s.mean), x.mean(dim=1))
    q = torch.quantile(x, torch.tensor(list(s.quantile_levels), dtype=torch.float64), dim=1).t()
    assert_close(torch.from_numpy(s.quantiles), q)
    labels = source.labels.numpy()
    for f in (0, 2):
        raw = np.array(
            [
                mannwhitneyu(
                    x[f].numpy()[labels == c],
                    x[f].numpy()[labels != c],
                    alternative="greater",
                    method="asymptotic",
                ).pvalue
                for c in range(3)
            ]
        )
        assert_close(torch.from_numpy(s.p_value[f]), torch.from_numpy(raw))
        assert_close(torch.from_numpy(s.p_adjusted[f]), torch.from_numpy(holm(raw[None])[0]))
    share = np.stack([(lr.label == c).mean(axis=1) for c in range(3)], axis=1)
    assert np.array_equal(s.topk_share, share)
    assert s.histogram.sum(axis=1).tolist() == [60, 60, 60]
    assert np.array_equal(s.class_count, [20, 20, 20])


def test_statistics_do_not_depend_on_the_batch_size(planted, tmp_path):
    path, model, source = planted
    write_report(model, source, tmp_path, None, 4, png=False, progress=False, batch_size=60)
    a, b = (
        read_report_h5(path).layers[1].stats,
        read_report_h5(tmp_path / "report.h5").layers[1].stats,
    )
    for name in ("maxima", "auroc", "label", "histogram"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_old_formats_read_with_statistics_absent(planted, tmp_path):
    v1 = "tests/store/fixtures/v1/report.h5"
    rep = Report(v1)
    assert not rep.has_statistics and rep.feature(1, 0).label is None
    with pytest.raises(DeconvvizError, match=r"format version 1\) holds no feature statistics"):
        rep.features_for("a")
    # A version-2 file: the same layers without their statistics group.
    v2 = tmp_path / "v2.h5"
    shutil.copy(planted[0], v2)
    with h5py.File(v2, "r+") as f:
        del f["layer1/statistics"]
        f.attrs["format_version"] = 2
    assert read_report_h5(v2).layers[1].stats is None
    res = CliRunner().invoke(main, ["features", str(v2), "--class", "red"])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"Error: report {v2} (format version 2) holds no feature statistics: they are computed "
        "by 'deconvviz report' since format version 3; run 'deconvviz report' again with the "
        "same --model, --data and --layer to compute them"
    ]


def test_a_damaged_statistics_group_is_one_line(planted, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(planted[0], bad)
    with h5py.File(bad, "r+") as f:
        del f["layer1/statistics/auroc"]
        f["layer1/statistics"].create_dataset("auroc", data=np.zeros((2, 3)))
    with pytest.raises(
        DeconvvizError,
        match=r"damaged: layer1/statistics/auroc has shape "
        r"\(2, 3\), expected \(3, 3\)",
    ):
        read_report_h5(bad)


def test_features_command(planted):
    path = str(planted[0])
    runner = CliRunner()
    res = runner.invoke(main, ["features", path, "--class", "red"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("1 feature detects red, strongest first")
    assert lines[1].startswith("  layer1 feature 0: AUROC 1.000, p ")
    res = runner.invoke(main, ["features", path, "--feature", "1"])
    assert res.exit_code == 0 and res.output.splitlines()[0] == "layer1 feature 1: no class"
    res = runner.invoke(main, ["features", path])
    assert res.output.splitlines() == ["layer1: 3 features, 2 no class; red 1"]
    res = runner.invoke(main, ["features", path, "--class", "rde"])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"Error: 'rde' is not a class of report {path}; closest: red, grey"
    ]
    res = runner.invoke(main, ["features", path, "--feature", "9"])
    assert (
        res.exit_code == 1
        and res.output.strip() == "Error: feature 9 is out of range: layer1 has features 0..2"
    )


def test_feature_statistics_on_an_empty_class_and_unlabelled_images():
    maxima = np.array([[0.0, 1.0, 2.0, 3.0]], np.float16)
    s = feature_statistics(maxima, np.array([0, -1, 0, 1]), 3, np.array([[1, 0]]))
    assert np.isnan(s["auroc"][0, 2]) and s["auroc"][0, 1] == 1.0 and s["auroc"][0, 0] == 0.0
    assert s["topk_share"].tolist() == [[0.5, 0.5, 0.0]]
    assert s["class_count"].tolist() == [2, 1, 0]
    assert s["label"][0] == -1  # two images per test: nothing significant


def test_the_python_route_writes_and_opens_the_same_file(tmp_path):
    import importlib
    import inspect

    import deconvviz
    import deconvviz.runs.report_run as report_module

    # ``deconvviz.report`` is a plain function (runs/report_run.py's verb); no module has
    # that name any more, so ``import deconvviz.report`` fails.
    assert deconvviz.report is report_module.report and inspect.isfunction(deconvviz.report)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("deconvviz.report")
    assert deconvviz.report is report_module.report  # the failed import changed nothing
    model, source = planted_model(), planted_source()
    rep = deconvviz.report(model, source, layers=1, top=3, out=tmp_path / "r", progress=False)
    assert isinstance(rep, deconvviz.Report) and rep.path == tmp_path / "r" / "report.h5"
    assert repr(rep) == (
        f"Report('{rep.path}': layer1 (3 features); top 3 of 60 images of planted)"
    )
    assert repr(rep.feature(1, 0)).startswith("Feature(layer1 #0: red, AUROC 1.000, p ")
    # The same file as write_report's, read back by the store and the features command.
    stored = read_report_h5(rep.path)
    assert stored.attrs["command_line"].startswith("deconvviz.report(model, 'planted'")
    assert np.array_equal(stored.layers[1].stats.auroc, rep.layer(1).stats.auroc)
    assert (
        repr(stored) == "Report(layer1 (3 features, top 3); 60 images of planted, format version 3)"
    )
    with pytest.raises(DeconvvizError, match=r"has no layer 'layer5' \(it has layer1\)"):
        rep.feature("layer5", 0)
