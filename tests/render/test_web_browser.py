"""The web report in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, on a small site made in the test, opened
from disk (file://). Skips, saying why, where no browser is installed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import needs_browser
from web_helpers import DEAD, make_report

from deconvviz.render.web import write_site
from deconvviz.store.report_read import read_report_h5

PAGE = 24  # tiles per page of the test site: layer 2's 64 features make 3 pages

pytestmark = needs_browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    h5 = make_report(folder, k=3)
    write_site(h5, folder, page_size=PAGE)
    return folder / "site", read_report_h5(h5)


def _open(driver, path: Path, fragment: str = ""):
    driver.get(path.as_uri() + fragment)
    _wait(driver, lambda: driver.execute_script("return document.readyState") == "complete")


def _wait(driver, cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the page")


def _errors(driver):
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def _all_images_load(driver):
    """Scroll every image into view (they load lazily), then check each decoded."""
    driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    _wait(
        driver, lambda: driver.execute_script("return [...document.images].every(i => i.complete)")
    )
    sizes = driver.execute_script("return [...document.images].map(i => [i.src, i.naturalWidth])")
    broken = [src for src, w in sizes if not w]
    assert sizes and not broken, broken[:3]
    return len(sizes)


def _tiles(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#grid a.tile')].map(a => +a.dataset.feature)"
    )


def test_index_loads_with_every_thumbnail(browser, site):
    root, rep = site
    _open(browser, root / "index.html")
    browser.execute_script("console.error('deconvviz probe')")  # the log is read for real
    assert any("deconvviz probe" in e["message"] for e in _errors(browser))
    assert browser.title == "deconvviz report: layer 1, layer 2"
    sections = browser.execute_script(
        "return [...document.querySelectorAll('section.layer h2 a')].map(a => a.textContent)"
    )
    assert sections == ["layer 1", "layer 2"]
    n = _all_images_load(browser)
    alive = sum(min(32, int((rep.layers[L].activation[:, 0] > 0).sum())) for L in (1, 2))
    assert n == 2 * alive  # projection and patch of each strongest feature
    assert "deconvviz report --test" in browser.find_element("css selector", "table.prov").text
    assert _errors(browser) == []


def test_layer_page_shows_its_tiles_with_every_image_loaded(browser, site):
    root, rep = site
    _open(browser, root / "layer2.html")
    assert _tiles(browser) == list(range(PAGE))
    n = _all_images_load(browser)
    dead_on_page = int(DEAD < PAGE)
    assert n == 2 * (PAGE - dead_on_page)
    dead = browser.find_element("id", f"f{DEAD}")
    assert "never fires" in dead.text and dead.find_elements("tag name", "img") == []
    assert browser.find_element("id", "range").text == "features 1–24 of 64 (page 1 of 3)"
    assert _errors(browser) == []


def test_click_opens_a_feature_and_arrow_keys_move(browser, site):
    from selenium.webdriver.common.keys import Keys

    root, rep = site
    _open(browser, root / "layer2.html")
    browser.find_element("id", "f3").click()
    _wait(browser, lambda: browser.current_url.endswith("/layer2/feature003.html"))
    _wait(browser, lambda: browser.execute_script("return document.readyState") == "complete")
    cards = browser.find_elements("css selector", ".card")
    assert len(cards) == 3 and cards[0].find_element("tag name", "h3").text.startswith("#1")
    i = int(rep.layers[2].image_index[3, 0])
    assert f"#{i}" in cards[0].text
    _all_images_load(browser)  # projections, patches and whole images
    box = browser.execute_script(
        "const b = document.querySelector('.card .box').getBoundingClientRect();"
        "const w = document.querySelector('.card .whole img').getBoundingClientRect();"
        "return [b.left - w.left, b.top - w.top, b.width, b.height, w.width]"
    )
    y0, x0, y1, x1 = rep.layers[2].patch_box[3, 0]
    scale = box[4] / 32
    assert box[0] == pytest.approx(x0 * scale, abs=1) and box[1] == pytest.approx(y0 * scale, abs=1)
    assert box[2] == pytest.approx((x1 - x0) * scale, abs=1)
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.ARROW_RIGHT)
    _wait(browser, lambda: browser.current_url.endswith("/layer2/feature004.html"))
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)
    _wait(browser, lambda: browser.current_url.endswith("/layer2/feature003.html"))
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_UP)  # back to the layer
    _wait(browser, lambda: "/layer2.html#" in browser.current_url)
    _wait(browser, lambda: browser.find_elements("css selector", "a.tile.hit"))
    assert browser.find_element("css selector", "a.tile.hit").get_attribute("id") == "f3"
    # The feature that never fires says so, with no broken picture.
    _open(browser, root / "layer2" / f"feature{DEAD:03d}.html")
    assert "never fires" in browser.find_element("tag name", "h1").text
    assert browser.find_elements("tag name", "img") == []
    assert _errors(browser) == []


def test_sort_hide_dead_paging_and_jump(browser, site):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    root, rep = site
    act = rep.layers[2].activation[:, 0]
    _open(browser, root / "layer2.html")
    Select(browser.find_element("id", "sort")).select_by_value("activation")
    by_act = sorted(range(64), key=lambda f: (-act[f], f))
    assert _tiles(browser) == by_act[:PAGE]
    browser.find_element("id", "hide-dead").click()
    assert browser.find_element("id", "range").text == "features 1–24 of 63 (page 1 of 3)"
    browser.find_element("id", "next").click()
    browser.find_element("id", "next").click()
    assert _tiles(browser) == [f for f in by_act if f != DEAD][2 * PAGE :]
    assert DEAD not in _tiles(browser)
    browser.find_element("id", "hide-dead").click()  # shown again, from page 1
    assert _tiles(browser) == by_act[:PAGE]
    for _ in range(2):  # next page by key
        browser.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
    assert _tiles(browser) == by_act[2 * PAGE :] and _tiles(browser)[-1] == DEAD
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)
    assert _tiles(browser) == by_act[PAGE : 2 * PAGE]
    Select(browser.find_element("id", "sort")).select_by_value("feature")
    assert _tiles(browser) == list(range(PAGE))
    jump = browser.find_element("id", "jump")
    jump.send_keys("50", Keys.ENTER)
    assert _tiles(browser) == list(range(2 * PAGE, 64))
    assert browser.find_element("css selector", "a.tile.hit").get_attribute("id") == "f50"
    # The state lives in the address, so a link (or going back) shows the same view.
    assert browser.current_url.endswith("#page=3&sort=feature&f=50")
    _open(browser, root / "layer2.html", "#f9")
    assert 9 in _tiles(browser) and _tiles(browser)[0] == 0
    assert np.isclose(
        float(browser.find_element("id", "f9").text.split("act ")[1].split()[0]), act[9], rtol=5e-3
    )
    assert _errors(browser) == []


def test_a_site_of_some_features_names_and_steps_through_their_channels(browser, tmp_path_factory):
    """``report --feature 3 --feature 7-9 --html``: tiles, feature pages, the arrow keys
    and the jump box all use the channel numbers the report keeps."""
    from selenium.webdriver.common.keys import Keys

    folder = tmp_path_factory.mktemp("some")
    ids = [3, 7, 8, 9]
    make_report(folder, k=3, html=True, features=ids)
    root = folder / "site"
    _open(browser, root / "layer2.html")
    assert _tiles(browser) == ids
    _all_images_load(browser)
    assert browser.find_element("id", "f8").text.startswith("feature 8")
    browser.find_element("id", "f8").click()
    _wait(browser, lambda: browser.current_url.endswith("/layer2/feature008.html"))
    _wait(browser, lambda: browser.execute_script("return document.readyState") == "complete")
    assert browser.find_element("tag name", "h1").text.startswith("layer 2, feature 8:")
    _all_images_load(browser)
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)  # row before: 7
    _wait(browser, lambda: browser.current_url.endswith("/layer2/feature007.html"))
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_LEFT)  # and then 3
    _wait(browser, lambda: browser.current_url.endswith("/layer2/feature003.html"))
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_UP)
    _wait(browser, lambda: "/layer2.html#" in browser.current_url)
    _wait(browser, lambda: browser.find_elements("css selector", "a.tile.hit"))
    assert browser.find_element("css selector", "a.tile.hit").get_attribute("id") == "f3"
    jump = browser.find_element("id", "jump")
    jump.send_keys("5", Keys.ENTER)  # not kept: said so, nothing moves
    assert (
        browser.execute_script("return document.getElementById('jump').validationMessage")
        == "this report keeps features 3, 7\u20139 of this layer"
    )
    jump.clear()
    jump.send_keys("9", Keys.ENTER)
    assert browser.find_element("css selector", "a.tile.hit").get_attribute("id") == "f9"
    assert _errors(browser) == []
