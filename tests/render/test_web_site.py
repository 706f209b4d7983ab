"""The web report's files (no browser): layout, pixels, escaping, atomic replacement, old and
bad report files, the command line."""

from __future__ import annotations

import html
import itertools
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_render_redraws, folder_bytes
from PIL import Image
from web_helpers import DEAD, layer_json, make_report, source

from deconvviz.cli import main
from deconvviz.errors import DeconvvizError
from deconvviz.render.display import to_display, to_display_uint8
from deconvviz.render.report_png import _tiles
from deconvviz.render.web import site as site_mod
from deconvviz.render.web import write_site
from deconvviz.render.web.pages import json_script
from deconvviz.render.web.site import feature_tiles
from deconvviz.store.report_read import read_report_h5

FIXTURES = Path(__file__).resolve().parents[1] / "store" / "fixtures"


@pytest.fixture(scope="module")
def report_h5(tmp_path_factory):
    return make_report(tmp_path_factory.mktemp("web"), k=3, html=True)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_site_layout_pixels_and_pages(report_h5):
    site = report_h5.parent / "site"
    rep = read_report_h5(report_h5)
    assert {p.name for p in site.iterdir()} == {
        "index.html",
        "assets",
        "images",
        "layer1.html",
        "layer2.html",
        "layer1",
        "layer2",
    }
    assert sorted(p.name for p in (site / "assets").iterdir()) == [
        "feature.js",
        "index.js",
        "layer.js",
        "style.css",
    ]
    # Whole images: one PNG per kept image, exactly its stored pixels.
    table = rep.images
    assert sorted(p.name for p in (site / "images").iterdir()) == sorted(
        f"image{i}.png" for i in table.index.tolist()
    )
    j = len(table.index) // 2
    assert np.array_equal(
        _png(site / "images" / f"image{table.index[j]}.png"), table.pixels[j].transpose(1, 2, 0)
    )
    lr = rep.layers[2]
    F_, k = lr.features, lr.k
    pages = sorted(p.name for p in (site / "layer2").glob("*.html"))
    assert pages == [f"feature{f:03d}.html" for f in range(F_)]
    # Tiles at the stored size, drawn with the package's display normalisation.
    f = int(np.argmax(lr.activation[:, 0]))
    for r in range(k):
        proj = _png(site / "layer2" / "tiles" / f"feature{f:03d}_{r + 1}_projection.png")
        assert proj.shape == tuple(lr.rf_size) + (3,)
        want = to_display(torch.from_numpy(lr.projection[f, r]))
        assert np.array_equal(proj, np.round(want * 255).astype(np.uint8))
        patch = _png(site / "layer2" / "tiles" / f"feature{f:03d}_{r + 1}_patch.png")
        y0, x0, y1, x1 = lr.patch_box[f, r]
        oy, ox = y0 - lr.patch_origin[f, r, 0], x0 - lr.patch_origin[f, r, 1]
        inside = patch[oy : oy + y1 - y0, ox : ox + x1 - x0]
        assert np.array_equal(
            inside, table.pixels[table.row(lr.image_index[f, r])].transpose(1, 2, 0)[y0:y1, x0:x1]
        )
        assert (patch == 128).all(axis=2).sum() >= patch.shape[0] * patch.shape[1] - inside.shape[
            0
        ] * inside.shape[1]  # outside the image: mid-grey
    # A feature that never fires: no tiles, a page that says so, a flag in the layer data.
    assert lr.activation[DEAD, 0] == 0
    assert not list((site / "layer2" / "tiles").glob(f"feature{DEAD:03d}_*"))
    dead_page = (site / "layer2" / f"feature{DEAD:03d}.html").read_text(encoding="utf-8")
    assert f"Feature {DEAD} never fires" in dead_page and "<img" not in dead_page
    data = layer_json((site / "layer2.html").read_text(encoding="utf-8"))
    assert [x[0] for x in data["features"]] == list(range(F_))
    assert [x[2] for x in data["features"]] == [int(a == 0) for a in lr.activation[:, 0]]
    np.testing.assert_allclose([x[1] for x in data["features"]], lr.activation[:, 0], rtol=1e-4)
    assert data["pageSize"] == 96 and data["dir"] == "layer2"
    layer_page = (site / "layer2.html").read_text(encoding="utf-8")
    assert "1 of the 64 features never fires" in layer_page
    # The feature page: every rank with its facts and the receptive-field box on the image.
    page = (site / "layer2" / f"feature{f:03d}.html").read_text(encoding="utf-8")
    H, W = table.pixels.shape[2:]
    for r in range(k):
        i = int(lr.image_index[f, r])
        assert f'src="../images/image{i}.png"' in page and f"#{i}<" in page
        y0, x0, y1, x1 = (int(v) for v in lr.patch_box[f, r])
        assert (
            f"left:{100 * x0 / W:.3f}%;top:{100 * y0 / H:.3f}%;"
            f"width:{100 * (x1 - x0) / W:.3f}%;height:{100 * (y1 - y0) / H:.3f}%"
        ) in page
        py, px = lr.position[f, r]
        assert f"row {py}, column {px} of the" in page
        assert f"activation {float(lr.activation[f, r]):.4g}" in page
    assert 'id="prev"' in page or f == 0
    assert f'href="../layer2.html#f{f}"' in page
    # The index: provenance and the strongest features of each layer first.
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "deconvviz report --test" in index and "generated[:40]" in index
    first = int(re.search(r'href="layer2/feature(\d+)\.html"', index).group(1))
    assert first == f


def test_report_html_equals_render_html_and_bad_output_folders(tmp_path):
    from web_helpers import tiny_model

    from deconvviz.data.builtin import synthetic_images

    tiny_model(tmp_path)  # writes tmp_path/tiny.pt
    images, _ = synthetic_images(24, seed=4)
    data = tmp_path / "my data"
    for i in range(24):  # class folders and file names with spaces, quotes and non-ASCII
        d = data / ('cats & "dogs"' if i % 2 else "Ünï cödé")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"it's {i:02d}.png")
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "report",
            "--model",
            str(tmp_path / "tiny.pt"),
            "--data",
            str(data),
            "--top",
            "2",
            "--no-png",
            "--html",
            "--out",
            str(tmp_path / "a"),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"wrote {tmp_path / 'a' / 'report.h5'}",
        f"wrote {tmp_path / 'a' / 'site' / 'index.html'}",
    ]
    h5 = tmp_path / "a" / "report.h5"
    page = (tmp_path / "a" / "site" / "layer1" / "feature000.html").read_text(encoding="utf-8")
    assert "cats &amp; &quot;dogs&quot;" in page or "Ünï cödé" in page
    assert re.search(r"it&#x27;s \d\d\.png", page)
    res = assert_render_redraws(h5, tmp_path / "a", tmp_path / "b", html=True)
    assert res.output.strip() == f"wrote {tmp_path / 'b' / 'site' / 'index.html'}"
    assert len(folder_bytes(tmp_path / "b" / "site")) > 2 * (32 + 64)
    # An output folder under a file, or whose site/ is a file: one line, nothing written.
    # (--out naming a file itself is click's usage error, exit 2, as for every --out.)
    (tmp_path / "file").write_text("x")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "site").write_text("x")
    res = runner.invoke(main, ["render", str(h5), "--html", "--out", str(tmp_path / "file")])
    assert res.exit_code == 2 and "is a file" in res.output
    for out, message in (
        (tmp_path / "file" / "sub", "cannot create output folder"),
        (tmp_path / "c", "site exists and is not a folder"),
    ):
        res = runner.invoke(main, ["render", str(h5), "--html", "--out", str(out)])
        assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
        assert message in res.output and res.output.startswith("Error: ")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["site"]
    assert (tmp_path / "c" / "site").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_is_one_line(report_h5, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        res = CliRunner().invoke(main, ["render", str(report_h5), "--html", "--out", str(out)])
    finally:
        out.chmod(0o700)
    assert res.exit_code == 1 and "is not writable" in res.output
    assert list(out.iterdir()) == []


def test_names_from_the_file_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    classes = [evil, "say \"hi\" & 'bye'", "Ünïcödé 猫", "a </script><!-- b"] + [
        f"c{i}" for i in range(6)
    ]
    paths = [f'/data/x y/{evil}/it\'s "{i}" é.png' for i in range(40)]
    src = source(40, class_names=classes, paths=paths)
    h5 = make_report(tmp_path, k=4, html=True, src=src)
    site = tmp_path / "site"
    rep = read_report_h5(h5, layers=["layer2"])
    lr = rep.layers[2]
    seen_classes = set()

    class Check(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.scripts, self.text = [], []

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self.scripts.append(dict(attrs))
            for name, _value in attrs:
                assert not name.startswith("on"), (tag, name)  # no injected handlers

        def handle_data(self, data):
            self.text.append(data)

    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        assert evil not in text and "</script><!--" not in text
        p = Check()
        p.feed(text)
        p.close()
        for attrs in p.scripts:  # only the site's own scripts and its JSON data
            assert attrs.get("src", "").endswith(
                ("assets/layer.js", "assets/feature.js", "assets/index.js")
            ) or attrs in (
                {"type": "application/json", "id": "layer-data"},
                {"type": "application/json", "id": "label-data"},
            ), attrs
        body = "".join(p.text)
        seen_classes |= {c for c in classes if c in body}
        if page.name.startswith("feature") and page.parent.name == "layer2":
            f = int(page.stem[len("feature") :])
            if lr.activation[f, 0] > 0:
                # The file name is shown (its base name) with the whole path as a title.
                i = int(lr.image_index[f, 0])
                assert html.escape(Path(paths[i]).name, quote=True) in text
                assert f'title="{html.escape(paths[i], quote=True)}"' in text
    assert set(classes[:4]) <= seen_classes, seen_classes  # shown as text, intact
    # The JSON in a layer page reads back to the exact class names.
    data = layer_json((site / "layer2.html").read_text(encoding="utf-8"))
    want = [classes[int(lr.label[f, 0])] for f in range(lr.features)]
    assert [x[3] for x in data["features"]] == want
    assert json_script(["</script>", "\u2028"]) == '["\\u003c/script\\u003e","\\u2028"]'


def test_an_interrupted_site_leaves_the_earlier_one_untouched(report_h5, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_site(report_h5, out)
    before = folder_bytes(out)
    real = site_mod._png
    for failure in (OSError(28, "No space left on device"), KeyboardInterrupt()):
        calls = itertools.count(1)  # PNGs are written on several threads

        def failing(array, path, failure=failure, calls=calls):
            if next(calls) == 40:
                raise failure
            real(array, path)

        monkeypatch.setattr(site_mod, "_png", failing)
        with pytest.raises(type(failure)):
            write_site(report_h5, out, page_size=10)
        assert next(calls) > 40
        assert folder_bytes(out) == before  # same files, no temporary folder left
        assert sorted(p.name for p in out.iterdir()) == ["site"]
    # A complete run replaces the site; so does the two-rename fallback where the system
    # cannot swap two folders in one step.
    monkeypatch.setattr(site_mod, "_png", real)
    write_site(report_h5, out, page_size=10)
    assert layer_json((out / "site" / "layer1.html").read_text(encoding="utf-8"))["pageSize"] == 10
    import deconvviz.store.atomic as atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    write_site(report_h5, out, page_size=11)
    assert layer_json((out / "site" / "layer1.html").read_text(encoding="utf-8"))["pageSize"] == 11
    assert sorted(p.name for p in out.iterdir()) == ["site"]
    after = folder_bytes(out)
    assert after.keys() == before.keys()


def test_a_version_1_report_makes_a_site_without_whole_images(tmp_path):
    res = CliRunner().invoke(
        main, ["render", str(FIXTURES / "v1" / "report.h5"), "--html", "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    site = tmp_path / "site"
    assert not (site / "images").exists()
    page = (site / "layer1" / "feature000.html").read_text(encoding="utf-8")
    assert page.count("whole image not stored in this version-1 report") == 2  # k = 2
    assert "tiles/feature000_1_projection.png" in page
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "format version 1" in index and "report written by deconvviz 0.1.0" in index


def test_bad_report_files_are_one_line_and_write_nothing(report_h5, tmp_path):
    damaged = tmp_path / "damaged.h5"
    data = report_h5.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    newer = tmp_path / "newer.h5"
    shutil.copy(report_h5, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = 4
    broken = tmp_path / "broken.h5"
    shutil.copy(report_h5, broken)
    with h5py.File(broken, "a") as f:
        del f["layer2/activation"]
    projection = tmp_path / "projection.h5"
    from deconvviz.store.projection_h5 import PROJECTION_FORMAT

    with h5py.File(projection, "w") as f:
        f.attrs["format"] = PROJECTION_FORMAT
    cases = [
        (damaged, "is not a readable HDF5 file"),
        (projection, "--html makes the web report of a deconvviz-report file"),
        (newer, "has format version 4; this deconvviz reads versions 1..3"),
        (broken, "is damaged: layer2/activation missing"),
        (tmp_path / "none.h5", "does not exist"),
    ]
    for path, message in cases:
        out = tmp_path / f"out-{path.stem}"
        res = CliRunner().invoke(main, ["render", str(path), "--html", "--out", str(out)])
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output
        assert not out.exists() or list(out.iterdir()) == []
    with pytest.raises(DeconvvizError, match="holds no layers"):
        write_site(read_report_h5(report_h5, layers=[]), tmp_path / "x")


def _same_pixels(got, want_float):
    # Two routes to one display normalisation (a partial selection against torch.quantile):
    # the scale may differ in the last bit, which moves a pixel that sits exactly on a rounding
    # boundary by one level, never more.
    want = np.round(want_float * 255).astype(np.int16)
    assert got.shape == want.shape
    assert np.abs(got.astype(np.int16) - want).max(initial=0) <= 1
    assert (got.astype(np.int16) != want).mean() < 1e-3


def test_site_tiles_are_the_report_pngs_tiles(report_h5):
    # The site draws with a faster route (partial selection, uint8 out); it must give the
    # pixels of the package's one display normalisation, as the report PNGs use it.
    rep = read_report_h5(report_h5)
    for lr in rep.layers.values():
        for f in range(lr.features):
            proj, patch, scale = feature_tiles(lr, f)
            want_proj, want_patch = _tiles(lr, f)
            _same_pixels(proj, want_proj)
            _same_pixels(patch, want_patch)
            flat = np.abs(lr.projection[f].reshape(lr.k, -1)).astype(np.float64)
            q = torch.quantile(torch.from_numpy(flat), 0.995, dim=1).numpy()
            np.testing.assert_allclose(scale, np.where(q > 0, q, flat.max(axis=1)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_to_display_uint8_equals_to_display(dtype):
    rng = np.random.default_rng(5)
    tiles = rng.standard_normal((7, 3, 23, 19)).astype(dtype)
    tiles[1][rng.random((3, 23, 19)) < 0.998] = 0  # sparse: the percentile is 0
    tiles[2] = 0  # all zero: mid-grey
    tiles[3] *= 1e-30 if dtype == np.float64 else 1  # tiny values
    tiles[4, :, :, :10] = 4.0  # ties at the percentile
    before = tiles.copy()
    got, scale = to_display_uint8(tiles)
    want = to_display(torch.from_numpy(tiles.astype(np.float64)))
    assert got.dtype == np.uint8 and got.shape == (7, 23, 19, 3)
    _same_pixels(got, want)
    assert (got[2] == 128).all() and scale[2] == 0
    assert np.array_equal(tiles, before)  # rendering never modifies its input


def test_graph_node_names_and_negative_activations(tmp_path):
    # Layers named by graph nodes (any characters; one named like a site folder), and a
    # node before any ReLU whose features peak below zero: shown, not "never fires".
    import dataclasses

    rep = read_report_h5(FIXTURES / "v1" / "report.h5")
    lr = rep.layers[1]
    neg = dataclasses.replace(lr, node="layer3.1/conv <b>", activation=lr.activation - 5.0)
    other = dataclasses.replace(lr, node="images")
    out = tmp_path / "site"
    from deconvviz.render.web import SiteWriter

    w = SiteWriter(out, rep.attrs, None, "today")
    s1, s2 = w.add_layer(neg), w.add_layer(other)
    w.finish()
    assert (s1.slug, s2.slug) == ("layer3.1_conv__b_", "node_images")
    assert s1.dead == 0 and len(s1.strongest) == 2
    page = (out / "layer3.1_conv__b_" / "feature000.html").read_text(encoding="utf-8")
    assert "never fires" not in page and page.count('class="card"') == 2
    assert "node layer3.1/conv &lt;b&gt;" in page
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="layer3.1_conv__b_.html"' in index and 'href="node_images.html"' in index
    assert not (out / "images").exists()


def test_report_html_failing_midway_leaves_the_earlier_report_and_site(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    make_report(out, k=2, html=True)
    before = folder_bytes(out)
    assert Path("report.h5") in before and Path("site/index.html") in before
    real, calls = site_mod._png, itertools.count(1)

    def failing(array, path):
        if next(calls) == 30:
            raise OSError(28, "No space left on device")
        real(array, path)

    monkeypatch.setattr(site_mod, "_png", failing)
    with pytest.raises(OSError, match="No space left"):
        make_report(out, k=3, html=True)
    after = folder_bytes(out)
    assert after.pop(Path(".scan-state.pt"), None) is not None  # kept for --resume
    for j in range(2):  # with each layer's per-image maxima
        assert after.pop(Path(f".scan-state.maxima{j}.f16"), None) is not None
    assert after.pop(Path("report.h5.partial"), None) is not None  # its finished layers too
    assert after == before  # neither report.h5 nor any file of the site changed, no leftovers


def _stats_section(page: str) -> str:
    m = re.search(r'<section class="stats">.*?</section>', page, re.S)
    return m.group(0) if m else ""


def test_a_report_of_some_features_names_them_by_channel(report_h5, tmp_path):
    """``report --feature 3 --feature 7-9 --html``: the site names and links each feature
    by its channel number, as the whole layer's site does (DEAD, feature 7, among them)."""
    from web_helpers import tiny_model

    ids = [3, 7, 8, 9]
    assert DEAD in ids
    tiny_model(tmp_path)  # tmp_path/tiny.pt, the same weights as report_h5's model
    some = make_report(tmp_path / "api", k=3, html=True, features=ids)
    site, whole = some.parent / "site", report_h5.parent / "site"
    for layer in ("layer1", "layer2"):
        assert sorted(p.name for p in (site / layer).glob("*.html")) == [
            f"feature{f:03d}.html" for f in ids
        ]
        data = layer_json((site / f"{layer}.html").read_text(encoding="utf-8"))
        full = layer_json((whole / f"{layer}.html").read_text(encoding="utf-8"))
        assert [x[0] for x in data["features"]] == ids
        assert data["numbering"] == "this report keeps features 3, 7\u20139 of this layer"
        assert full["numbering"] == f"features are numbered 0\u2013{len(full['features']) - 1}"
        # Each channel's row says what the whole layer's row for that channel says.
        assert [x[1:] for x in data["features"]] == [full["features"][f][1:] for f in ids]
        for f in ids:
            a = (site / layer / f"feature{f:03d}.html").read_text(encoding="utf-8")
            b = (whole / layer / f"feature{f:03d}.html").read_text(encoding="utf-8")
            assert f"feature {f}" in a and _stats_section(a) == _stats_section(b) != ""
            # Patches: the same pixels cut by the same code as the whole layer's site.
            for tile in sorted((site / layer / "tiles").glob(f"feature{f:03d}_*_patch.png")):
                assert tile.read_bytes() == (whole / layer / "tiles" / tile.name).read_bytes()
        tiles = {p.name.split("_")[0] for p in (site / layer / "tiles").iterdir()}
        assert tiles <= {f"feature{f:03d}" for f in ids}
    pages = {f: (site / "layer2" / f"feature{f:03d}.html").read_text(encoding="utf-8") for f in ids}
    assert "layer 2, feature 7: never fires" in pages[DEAD]
    # Previous / next step through the channels kept; the layer link finds the tile.
    assert '<a class="off">&lsaquo; first feature</a>' in pages[3]
    assert '<a id="next" href="feature007.html">feature 7 &rsaquo;</a>' in pages[3]
    assert '<a id="prev" href="feature007.html">&lsaquo; feature 7</a>' in pages[8]
    assert '<a id="next" href="feature009.html">feature 9 &rsaquo;</a>' in pages[8]
    assert '<a class="off">last feature &rsaquo;</a>' in pages[9]
    assert 'href="../layer2.html#f8"' in pages[8]
    layer_page = (site / "layer2.html").read_text(encoding="utf-8")
    assert (
        'min="3" max="9"' in layer_page and 'href="layer2/feature003.html">feature 3' in layer_page
    )
    # The index links the kept channels only.
    index = (site / "index.html").read_text(encoding="utf-8")
    linked = set(re.findall(r'href="layer\d/feature(\d{3})\.html"', index))
    assert linked and linked <= {f"{f:03d}" for f in ids}
    # From the shell: report --feature ... --html, and render --html of its file.
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        main,
        [
            "report",
            "--model",
            str(tmp_path / "tiny.pt"),
            "--data",
            "builtin",
            "--limit",
            "40",
            "--top",
            "2",
            "--feature",
            "3",
            "--feature",
            "7-9",
            "--no-png",
            "--html",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "site" / "layer2").glob("*.html")) == [
        f"feature{f:03d}.html" for f in ids
    ]
    assert_render_redraws(out / "report.h5", out, tmp_path / "again", html=True)
