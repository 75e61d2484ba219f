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

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.browser import WAIT_SECONDS, chromium, foreign, requested_urls, wait_for
from tests.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN = "docs-browser-token"
TABLE = "docs_browser_table"


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
    yield from chromium()


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
