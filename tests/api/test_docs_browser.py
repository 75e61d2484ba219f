"""/docs and /redoc in a real browser with no network but the service (issue 19, part 1).

Debian's headless Chromium, driven through chromedriver by Selenium, loads the pages from a real
uvicorn process that requires a bearer token. Everything but the service is unreachable: every
host name resolves to nothing (--host-resolver-rules) and every non-loopback request goes to a
proxy address where nothing listens (--proxy-server), so a page that still needed a CDN would
stay blank. The test reads every URL the browser requested (Chromium's performance log) and
fails on any that is not the service's. Then it walks the token flow a user walks: an operation
tried without the token answers 401, "Authorize" with the token, the same operation answers 200.

Needs `chromium` and `chromium-driver` (Debian packages; .ci/run installs them). Without them
the tests skip and say how to install them; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import LiveServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "docs-browser-token"
TABLE = "docs_browser_table"
WAIT_SECONDS = 30  # an upper bound on a noisy machine; a page here renders in about a second


def missing_browser() -> str | None:
    """Why no browser test can run here, or None when Chromium and its driver are installed."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if absent:
        return f"{' and '.join(absent)} not found"
    return None


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer(env={"EMBED_TOKEN": TOKEN}).start()
    try:
        httpx.post(f"{live.url}/v1/tables", headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"name": TABLE, "num_embeddings": 8, "embedding_dim": 2},
                   timeout=10).raise_for_status()
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
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
        "--no-first-run", "--no-default-browser-check", "--window-size=1280,1700",
        f"--user-data-dir={profile}",
        # No network but loopback: no name resolves, and whatever is not loopback (which
        # Chromium never proxies) goes to a proxy port nobody listens on.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{free_port()}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
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


def execute_and_read_status(driver: webdriver.Chrome, operation: WebElement) -> tuple[str, str]:
    """Press Execute on an expanded operation; the live response's status and body."""
    for stale in operation.find_elements(By.CSS_SELECTOR, ".btn-clear"):
        stale.click()  # the previous response, so the wait below sees the new one
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(driver, WAIT_SECONDS).until(lambda _: operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"))
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response code")
    return status.text.strip(), body.text


def test_the_network_is_blocked(browser: webdriver.Chrome) -> None:
    """The sandbox itself: a CDN address (FastAPI's default asset URL) does not load."""
    with pytest.raises(WebDriverException, match="ERR_PROXY_CONNECTION_FAILED"):
        browser.get("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js")
    requested_urls(browser)  # drop this page's log


def test_swagger_ui_lists_the_operations_and_the_token_flow_works(
    browser: webdriver.Chrome, server: LiveServer, tmp_path: Path
) -> None:
    browser.get(f"{server.url}/docs")
    wait_for(browser, ".opblock")
    operations = {element.get_attribute("id") for element in
                  browser.find_elements(By.CSS_SELECTOR, ".opblock")}
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    expected = {f"operations-{op['tags'][0]}-{op['operationId']}"
                for path in document["paths"].values() for op in path.values()}
    assert operations == expected
    browser.save_screenshot(str(tmp_path / "operations.png"))  # in pytest's tmp dir, to look at

    # Without the token: 401 from the service, through the page.
    listing = browser.find_element(By.ID, "operations-tables-list_tables")
    listing.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(browser, "#operations-tables-list_tables .try-out__btn").click()
    status, body = execute_and_read_status(browser, listing)
    assert status == "401", body
    assert "Authorization header is missing" in body

    # Authorize with the bearer token, then the same operation lists the table.
    browser.find_element(By.CSS_SELECTOR, ".auth-wrapper button.authorize").click()
    wait_for(browser, ".modal-ux input").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()
    status, body = execute_and_read_status(browser, listing)
    assert status == "200", body
    assert TABLE in body
    curl = listing.find_element(By.CSS_SELECTOR, ".curl-command").text
    assert f"Authorization: Bearer {TOKEN}" in curl

    browser.save_screenshot(str(tmp_path / "authorized.png"))
    urls = requested_urls(browser)
    assert f"{server.url}/docs/assets/swagger-ui-bundle.js" in urls
    assert foreign(urls, server) == []


def test_redoc_renders_with_its_fonts(browser: webdriver.Chrome, server: LiveServer) -> None:
    browser.get(f"{server.url}/redoc")
    wait_for(browser, "h1")  # the API title, rendered by ReDoc from /openapi.json
    assert "Embedding parameter service" in browser.find_element(By.CSS_SELECTOR, "h1").text
    wait_for(browser, "[data-section-id='operation/lookup']")
    loaded = browser.execute_script(  # the faces the page's own @font-face rules loaded
        "return document.fonts.ready.then(fonts => [...fonts].filter(f => f.status === 'loaded')"
        ".map(f => f.family.replaceAll('\"', '') + ' ' + f.weight))")
    assert {"Montserrat 700", "Roboto 400"} <= set(loaded), loaded
    urls = requested_urls(browser)
    assert f"{server.url}/docs/assets/redoc.standalone.js" in urls
    assert any(url.endswith(".woff2") for url in urls)
    assert foreign(urls, server) == []
