"""What each feature detects, in the web report, in a real browser (issue 20): the label and
its AUROC under every tile, sorting by AUROC and firing rate, the class search box, the
feature page's AUROC bars and histogram, and the comparison page of ``deconvviz compare``.
Headless Chromium through Selenium, pages opened from disk; skips where no browser is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from browser_helpers import needs_browser
from click.testing import CliRunner
from test_web_browser import _all_images_load, _errors, _open, _tiles, _wait
from web_helpers import make_report, source

from deconvviz.render.feature_stats import class_name
from deconvviz.render.web import write_site
from deconvviz.store.report_read import read_report_h5

pytestmark = needs_browser
PAGE = 100  # every feature of layer 2 on one page


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stats-browser")
    h5 = make_report(folder, k=3, src=source(400))  # enough images for significant labels
    write_site(h5, folder, page_size=PAGE)
    return folder / "site", read_report_h5(h5)


def _labels(rep, L):
    s = rep.layers[L].stats
    names = json.loads(rep.attrs["class_names"])
    return s, [class_name(names, int(c)) if c >= 0 else "" for c in s.label]


def test_every_tile_shows_its_label_and_auroc(browser, site):
    root, rep = site
    s, names = _labels(rep, 2)
    _open(browser, root / "layer2.html")
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#grid a.tile')].map(a => "
        "[+a.dataset.feature, a.querySelector('.lbl').textContent])"
    )
    assert [f for f, _ in shown] == list(range(s.features))
    for f, text in shown:
        want = f"{names[f]} {s.label_auroc[f]:.2f}" if names[f] else "no class"
        assert text == want, (f, text, want)
    assert any(names) and not all(names)  # both kinds occur in this report
    assert _errors(browser) == []


@pytest.mark.parametrize("sort,column", [("auroc", "label_auroc"), ("firing", "firing_rate")])
def test_sorting_by_auroc_and_by_firing_rate(browser, site, sort, column):
    root, rep = site
    s = rep.layers[2].stats
    _open(browser, root / "layer2.html")
    browser.execute_script(
        f"var s = document.getElementById('sort'); s.value = '{sort}';"
        "s.dispatchEvent(new Event('change'))"
    )
    key = np.nan_to_num(getattr(s, column), nan=-1.0).round(4)
    want = sorted(range(s.features), key=lambda f: (-key[f], f))
    _wait(browser, lambda: _tiles(browser) == want)
    assert f"sort={sort}" in browser.current_url


def test_the_search_box_finds_features_by_class_name(browser, site):
    root, rep = site
    s, names = _labels(rep, 2)
    target = max(set(n for n in names if n), key=lambda n: (names.count(n), n))
    _open(browser, root / "layer2.html")
    box = browser.find_element("id", "class-search")
    box.send_keys(target.upper())
    want = [
        f
        for f in range(s.features)
        if names[f] == target or (names[f] and target.lower() in names[f].lower())
    ]
    _wait(browser, lambda: _tiles(browser) == want)
    box.clear()
    box.send_keys("no such class")
    _wait(browser, lambda: _tiles(browser) == [])
    assert (
        browser.find_element("id", "range").text == "no feature detects \u201cno such class\u201d"
    )
    # The search travels in the address: reopening it shows the same features.
    _open(browser, root / "layer2.html", f"#q={target}")
    _wait(browser, lambda: _tiles(browser) == want)


def test_the_feature_page_draws_auroc_bars_and_the_histogram(browser, site):
    root, rep = site
    s, names = _labels(rep, 2)
    f = int(np.flatnonzero(s.label >= 0)[0])
    _open(browser, root / "layer2" / f"feature{f:03d}.html")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('tr.auroc-row')].map(r => [r.dataset.class, "
        "r.querySelector('.bar').getBoundingClientRect().width, "
        "r.querySelector('.bar').parentElement.getBoundingClientRect().width, "
        "r.querySelector('td.auroc').textContent, r.classList.contains('label')])"
    )
    assert len(rows) == s.classes
    classes = json.loads(rep.attrs["class_names"])
    for c, (cls, bar, track, text, mine) in enumerate(rows):
        assert cls == class_name(classes, c)  # one row per class, in class order
        assert text == f"{s.auroc[f, c]:.3f}"
        assert abs(bar - (track - 2) * s.auroc[f, c]) <= 1.0  # bar length = AUROC
        assert mine == (c == s.label[f])
    bins = browser.execute_script("return document.querySelectorAll('svg.hist rect').length")
    assert bins == s.histogram.shape[1]
    heights = browser.execute_script(
        "return [...document.querySelectorAll('svg.hist rect')].map(r => +r.getAttribute('height'))"
    )
    top = s.histogram[f].max()
    assert np.allclose(heights, (90 - 20) * s.histogram[f] / top, atol=0.01)
    assert (
        f"detects: {names[f]} (AUROC {s.label_auroc[f]:.3f}"
        in browser.find_element("css selector", "p.label").text
    )
    # Offline: every resource of the page is a local file or inline.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(u.startswith(("file:", "data:")) for u in urls), urls
    assert _errors(browser) == []


def test_the_comparison_page(browser, tmp_path):
    import torch
    from web_helpers import tiny_model

    from deconvviz.cli import main
    from deconvviz.models.checkpoint import save_checkpoint

    model = tiny_model(tmp_path)
    meta = model.meta
    second = tmp_path / "other.pt"
    with torch.no_grad():
        model.features[0].weight.mul_(1.5)  # the same features, stronger
    save_checkpoint(
        second,
        model,
        arch="cifar_cnn",
        config={"num_classes": 10, "hidden": 16},
        class_names=meta["class_names"],
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    out = tmp_path / "cmp"
    res = CliRunner().invoke(
        main,
        [
            "compare",
            str(tmp_path / "tiny.pt"),
            str(second),
            "--limit",
            "60",
            "--layer",
            "1",
            "--top",
            "2",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    _open(browser, out / "compare.html")
    rows = browser.execute_script("return document.querySelectorAll('tr.pair').length")
    assert rows == 32  # layer 1's 32 features, each matched to itself
    _all_images_load(browser)
    links = browser.execute_script(
        "return [...document.querySelectorAll('tr.pair a')].map(a => a.href)"
    )
    assert len(links) == 2 * 32
    browser.get(links[0])
    _wait(browser, lambda: browser.execute_script("return document.readyState") == "complete")
    assert "feature" in browser.title and _errors(browser) == []


def test_the_index_finds_features_of_every_layer_by_class(browser, site):
    root, rep = site
    found = []
    for L in (1, 2):
        s, names = _labels(rep, L)
        found += [
            (-round(float(s.label_auroc[f]), 4), L, f, names[f])
            for f in range(s.features)
            if names[f]
        ]
    target = max({n for *_, n in found}, key=lambda n: (sum(x[3] == n for x in found), n))
    _open(browser, root / "index.html")
    browser.find_element("id", "class-search").send_keys(target)
    want = [
        f"layer {L}, feature {f}: {n} (AUROC {-a:.3f})"
        for a, L, f, n in sorted(found)
        if target in n
    ]
    _wait(
        browser,
        lambda: (
            browser.execute_script(
                "return [...document.querySelectorAll('#hits li')].map(li => li.textContent)"
            )
            == want
        ),
    )
    link = browser.execute_script("return document.querySelector('#hits a').href")
    browser.get(link)
    _wait(browser, lambda: browser.execute_script("return document.readyState") == "complete")
    L, f = next((L, f) for a, L, f, n in sorted(found) if target in n)  # the first listed
    assert browser.title == f"layer {L}, feature {f} - deconvviz report"
    assert _errors(browser) == []
