"""Matching the features of two networks (issue 20): the optimal assignment against a brute
force, chains through checkpoints, and the planted case: a network and a copy with its
channels permuted, where ``deconvviz compare`` must recover the permutation exactly."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_close

from deconvviz.cli import main
from deconvviz.engine.matching import correlation_matrix, follow_back, match_features
from deconvviz.store.compare_h5 import read_compare_h5


def test_correlation_matrix_is_pearson():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 50)), rng.normal(size=(3, 50))
    b[2] = 7.0  # constant: correlates 0
    want = np.corrcoef(np.vstack([a, b[:2]]))[:4, 4:]
    got = correlation_matrix(a, b)
    assert_close(torch.from_numpy(got[:, :2]), torch.from_numpy(want))
    assert (got[:, 2] == 0).all()


def test_the_assignment_is_optimal_not_greedy():
    # Greedy takes (0, 0) = 0.9 and is left with (1, 1) = 0.1: 1.0 in all. The optimum
    # pairs (0, 1) and (1, 0): 0.8 + 0.8 = 1.6.
    corr = np.array([[0.9, 0.8], [0.8, 0.1]])
    m = match_features(corr, threshold=0.0)
    assert sorted(zip(m.a.tolist(), m.b.tolist())) == [(0, 1), (1, 0)]
    # Against every one-to-one assignment of a random 3 x 5 matrix.
    rng = np.random.default_rng(0)
    corr = rng.uniform(-1, 1, size=(3, 5))
    best = max(sum(corr[i, p[i]] for i in range(3)) for p in itertools.permutations(range(5), 3))
    m = match_features(corr, threshold=-1.0)
    assert abs(m.correlation.sum() - best) < 1e-12
    assert m.unmatched_a.size == 0 and m.unmatched_b.size == 2
    assert list(m.correlation) == sorted(m.correlation, reverse=True)


def test_pairs_below_the_threshold_are_unmatched():
    corr = np.array([[0.95, 0.0], [0.0, 0.3]])
    m = match_features(corr, threshold=0.5)
    assert m.a.tolist() == [0] and m.b.tolist() == [0]
    assert m.unmatched_a.tolist() == [1] and m.unmatched_b.tolist() == [1]


def test_follow_back_chains_permutations_through_checkpoints():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 80))
    p1, p2 = rng.permutation(6), rng.permutation(6)
    nets = [x, x[p1], x[p1][p2]]  # feature j of net 1 is feature p1[j] of net 0
    chains, corr, _ = follow_back(nets)
    assert chains[2].tolist() == list(range(6))
    assert chains[1].tolist() == p2.tolist()
    assert chains[0].tolist() == p1[p2].tolist()
    assert np.allclose(corr, 1.0, rtol=0, atol=1e-12)
    # A feature that changed beyond recognition breaks its chain.
    y = nets[2].copy()
    y[3] = rng.normal(size=80)
    chains, corr, _ = follow_back([x, x[p1], y])
    assert chains[1, 3] == -1 and chains[0, 3] == -1 and np.isnan(corr[:, 3]).all()


def _permuted_copy(src, dst, perm1, perm2):
    """The same network with conv 1's and conv 2's output channels permuted (feature j of
    the copy is feature perm[j] of the original), the next layers' inputs permuted to
    match, so it computes the same function."""
    payload = torch.load(src, weights_only=True)
    sd = payload["state_dict"]
    sd["features.0.weight"], sd["features.0.bias"] = (
        sd["features.0.weight"][perm1],
        sd["features.0.bias"][perm1],
    )
    sd["features.3.weight"] = sd["features.3.weight"][:, perm1][perm2]
    sd["features.3.bias"] = sd["features.3.bias"][perm2]
    w = sd["classifier.1.weight"]
    sd["classifier.1.weight"] = w.view(w.shape[0], len(perm2), -1)[:, perm2].reshape(w.shape)
    torch.save(payload, dst)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from deconvviz.data.builtin import BUILTIN_CLASSES
    from deconvviz.models.architectures import build_model
    from deconvviz.models.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("pair")
    torch.manual_seed(3)
    model = build_model("cifar_cnn", num_classes=10, hidden=16, channels=(12, 16))
    a = save_checkpoint(
        folder / "a.pt",
        model,
        arch="cifar_cnn",
        config={"num_classes": 10, "hidden": 16, "channels": [12, 16]},
        class_names=BUILTIN_CLASSES,
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    g = torch.Generator().manual_seed(4)
    perm1, perm2 = torch.randperm(12, generator=g), torch.randperm(16, generator=g)
    _permuted_copy(a, folder / "b.pt", perm1, perm2)
    return folder, perm1, perm2


@pytest.mark.parametrize("layer", ["1", "2"])
def test_compare_recovers_a_planted_permutation_exactly(pair, tmp_path, layer):
    folder, perm1, perm2 = pair
    perm = (perm1 if layer == "1" else perm2).tolist()
    out = tmp_path / "cmp"
    res = CliRunner().invoke(
        main,
        [
            "compare",
            str(folder / "a.pt"),
            str(folder / "b.pt"),
            "--data",
            "builtin",
            "--limit",
            "150",
            "--layer",
            layer,
            "--top",
            "3",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"wrote {out / n}" for n in ("compare.h5", "compare.png", "compare.html")
    ]
    cmp = read_compare_h5(out / "compare.h5")
    step = cmp.steps[0]
    # Feature j of b is feature perm[j] of a: every a-feature finds exactly its copy.
    assert dict(zip(step["b"].tolist(), step["a"].tolist())) == dict(enumerate(perm))
    assert step["unmatched_a"].size == 0 and step["unmatched_b"].size == 0
    assert (step["r"] > 0.999).all()
    assert cmp.attrs["networks"] == ["a", "b"] and cmp.attrs["num_images"] == 150
    assert cmp.attrs["reports"] == ["net1/report.h5", "net2/report.h5"]
    # The correlation stored is that of the two reports' stored maxima.
    with h5py.File(out / "net1" / "report.h5") as fa, h5py.File(out / "net2" / "report.h5") as fb:
        name = f"layer{layer}/statistics/maxima"
        ma, mb = fa[name][()].astype(np.float64), fb[name][()].astype(np.float64)
    want = np.corrcoef(np.vstack([ma, mb]))[: len(ma), len(ma) :]
    assert_close(torch.from_numpy(step["correlation"]), torch.from_numpy(want))
    # The page: one row per pair, each linking to both networks' feature pages.
    page = (out / "compare.html").read_text()
    assert page.count('<tr class="pair">') == len(perm)
    assert 'href="net1/site/' in page and 'href="net2/site/' in page and "http" not in page


def test_compare_of_reports_and_over_three_checkpoints(pair, tmp_path):
    folder, perm1, _ = pair
    runner = CliRunner()
    reps = []
    for name in ("a", "b"):
        res = runner.invoke(
            main,
            [
                "report",
                "--model",
                str(folder / f"{name}.pt"),
                "--data",
                "builtin",
                "--limit",
                "120",
                "--layer",
                "1",
                "--top",
                "2",
                "--no-png",
                "--quiet",
                "--out",
                str(tmp_path / name),
            ],
        )
        assert res.exit_code == 0, res.output
        reps.append(str(tmp_path / name / "report.h5"))
    out = tmp_path / "chain"
    # Three networks given as reports: a, b, and a again: b's features go back to a's.
    res = runner.invoke(
        main, ["compare", *reps, reps[0], "--layer", "1", "--out", str(out), "--no-html"]
    )
    assert res.exit_code == 0, res.output
    cmp = read_compare_h5(out / "compare.h5")
    assert cmp.attrs["networks"] == ["a", "b", "a-2"]
    assert cmp.chains[2].tolist() == list(range(12))
    assert cmp.chains[1].tolist() == torch.argsort(perm1).tolist()
    assert cmp.chains[0].tolist() == list(range(12))
    assert not (out / "compare.html").exists() and (out / "compare.png").stat().st_size > 1000


def test_compare_refuses_bad_input_in_one_line(pair, tmp_path):
    folder, _, _ = pair
    runner = CliRunner()
    out = tmp_path / "never"
    res = runner.invoke(
        main,
        [
            "compare",
            str(folder / "a.pt"),
            str(folder / "b.pt"),
            "--layer",
            "layer9.conv",
            "--limit",
            "20",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith("Error: network a: ") and not out.exists()
    # Two reports scanned on different data.
    for name, limit in (("a", "40"), ("b", "50")):
        assert (
            runner.invoke(
                main,
                [
                    "report",
                    "--model",
                    str(folder / f"{name}.pt"),
                    "--limit",
                    limit,
                    "--layer",
                    "1",
                    "--top",
                    "2",
                    "--no-png",
                    "--quiet",
                    "--out",
                    str(tmp_path / name),
                ],
            ).exit_code
            == 0
        )
    res = runner.invoke(
        main,
        [
            "compare",
            str(tmp_path / "a" / "report.h5"),
            str(tmp_path / "b" / "report.h5"),
            "--layer",
            "1",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "Error: networks a and b were scanned on different data (builtin:test, 40 images vs "
        "builtin:test, 50 images): compare needs the same images in the same order"
    ]
    assert not out.exists()
    # A report of some features of the node only (--feature): its rows are not the node.
    assert (
        runner.invoke(
            main,
            [
                "report",
                "--model",
                str(folder / "b.pt"),
                "--limit",
                "40",
                "--layer",
                "1",
                "--feature",
                "2-4",
                "--top",
                "2",
                "--no-png",
                "--quiet",
                "--out",
                str(tmp_path / "some"),
            ],
        ).exit_code
        == 0
    )
    res = runner.invoke(
        main,
        [
            "compare",
            str(tmp_path / "a" / "report.h5"),
            str(tmp_path / "some" / "report.h5"),
            "--layer",
            "1",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"Error: network some: report {tmp_path / 'some' / 'report.h5'} keeps some features of "
        "layer1 only (--feature); compare matches every feature of a node: give a report of "
        "the whole node, or the model"
    ]
    assert not out.exists()
    res = runner.invoke(main, ["compare", str(folder / "a.pt"), "--layer", "1"])
    assert res.exit_code == 2 and "give at least two networks" in res.output


def test_ctrl_c_in_the_second_scan_keeps_the_first_report(pair, tmp_path, monkeypatch):
    import deconvviz.runs.compare_run as compare_run

    folder, perm1, _ = pair
    out = tmp_path / "cmp"
    real = compare_run.write_report

    def pressed_in_net2(model, source, out_dir, *a, **k):
        if out_dir.name == "net2":  # the user presses Ctrl-C during the second scan
            raise KeyboardInterrupt
        return real(model, source, out_dir, *a, **k)

    monkeypatch.setattr(compare_run, "write_report", pressed_in_net2)
    args = ["--data", "builtin", "--limit", "150", "--layer", "1", "--top", "3", "--quiet"]
    res = CliRunner().invoke(
        main, ["compare", str(folder / "a.pt"), str(folder / "b.pt"), *args, "--out", str(out)]
    )
    kept = out / "net1" / "report.h5"
    assert res.exit_code == 1
    assert res.output == (
        f"Error: interrupted while scanning network b; the reports of the "
        f"networks before it are complete (a: {kept}): give those files to "
        "compare in place of their networks to skip their scans\n"
    )
    assert kept.is_file() and not (out / "compare.h5").exists()
    monkeypatch.setattr(compare_run, "write_report", real)
    res = CliRunner().invoke(
        main, ["compare", str(kept), str(folder / "b.pt"), *args, "--out", str(tmp_path / "again")]
    )
    assert res.exit_code == 0, res.output
    step = read_compare_h5(tmp_path / "again" / "compare.h5").steps[0]
    assert dict(zip(step["b"].tolist(), step["a"].tolist())) == dict(enumerate(perm1.tolist()))
