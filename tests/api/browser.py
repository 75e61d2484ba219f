"""Debian's headless Chromium through its chromedriver (Selenium), with no network but loopback:
the plumbing the browser tests share (tests/api/test_docs_browser.py, tests/api/test_ui_browser.py).

Needs `chromium` and `chromium-driver` (Debian packages; .ci/run installs them). Without them
the tests skip and say how to install them; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import LiveServer, free_port

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_SECONDS = 30  # an upper bound on a noisy machine; a page here renders in about a second


def missing_browser() -> str | None:
    """Why no browser test can run here, or None when Chromium and its driver are installed."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if absent:
        return f"{' and '.join(absent)} not found"
    return None


def chromium(window: str = "1280,1700") -> Iterator[webdriver.Chrome]:
    """A headless Chromium (skipped loudly without one; a failure under CI), quit afterwards."""
    reason = missing_browser()
    if reason is not None:
        message = (f"BROWSER TESTS NOT RUN: {reason}. Install Debian's Chromium and its driver "
                   "(`apt-get install chromium chromium-driver`, as .ci/run does) to run them.")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", f"--window-size={window}",
        f"--user-data-dir={profile}",
        # No network but loopback: no name resolves, and whatever is not loopback (which
        # Chromium never proxies) goes to a proxy port nobody listens on.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{free_port()}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver: webdriver.Chrome) -> dict[str, str | None]:
    """Every URL the page asked for since the last call, with the reason the browser blocked it
    without sending it (Chromium's "csp" for a Content-Security-Policy refusal), else None."""
    urls: dict[str, str] = {}
    blocked: dict[str, str] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[params["requestId"]] = params["blockedReason"]
    return {url: blocked.get(request) for request, url in urls.items()}


def foreign(urls: dict[str, str | None], server: LiveServer) -> list[str]:
    """The requests that would have left for another host: neither the service's, nor inline
    (data:, blob:), nor refused by the page's Content-Security-Policy before being sent."""
    return [url for url, blocked in urls.items()
            if not url.startswith((server.url + "/", "data:", "blob:")) and blocked != "csp"]


def wait_for(driver: webdriver.Chrome, css: str) -> WebElement:
    """The element, once visible; if it never shows, a failure naming what the page fetched."""
    try:
        found: WebElement = WebDriverWait(driver, WAIT_SECONDS).until(
            ready.visibility_of_element_located((By.CSS_SELECTOR, css)))
    except TimeoutException:
        pytest.fail(f"{css!r} did not appear on {driver.current_url} within {WAIT_SECONDS} s; "
                    f"the page requested {sorted(requested_urls(driver))}", pytrace=False)
    return found
