"""The browser every browser test of the web report drives (headless Chromium through
Selenium; the tests skip, saying why, where none is installed). A plugin that
``tests/conftest.py`` names in ``pytest_plugins``, so the ``browser`` fixture is found by name
like a conftest's (a second ``conftest`` module would shadow the top-level one the tests import
from; a fixture imported into a test module is shadowed by the parameter that asks for it)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None
)

_why = None
if importlib.util.find_spec("selenium") is None:
    _why = "selenium is not installed (pip install -e '.[test]')"
if _why is None and not CHROMIUM:
    _why = "no chromium browser installed (apt-get install chromium chromium-driver)"
if _why is None and not CHROMEDRIVER:
    _why = "no chromedriver installed (apt-get install chromium-driver)"
#: The browser tests' skip mark (``pytestmark = needs_browser``), with its reason.
needs_browser = pytest.mark.skipif(_why is not None, reason=_why or "")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The system's driver, named explicitly: Selenium never tries to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
