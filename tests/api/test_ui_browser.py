"""/ui in Debian's headless Chromium against a real uvicorn process, network blocked but loopback.

Without a token: the page lists the table with its live figures (a step applied while the page
is open shows up), draws one point per sampled row with the labels on hover, and its search
box lists the same neighbours as the API. With EMBED_TOKEN set: the page shows nothing but the
token question, refuses a wrong token, and works with the right one. No request leaves for
another host in either case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.browser import WAIT_SECONDS, chromium, foreign, requested_urls, wait_for
from tests.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN = "ui-browser-token"
ROWS, DIM = 120, 8
WORDS = [f"word{i}" for i in range(ROWS)]


def make_table(url: str, headers: dict[str, str]) -> None:
    httpx.post(f"{url}/v1/tables", headers=headers, json={
        "name": "words", "num_embeddings": ROWS, "embedding_dim": DIM, "seed": 5,
        "init": {"kind": "uniform", "low": -1, "high": 1}}, timeout=10).raise_for_status()
    httpx.put(f"{url}/v1/tables/words/labels", headers=headers, json={"labels": WORDS},
              timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def open_server() -> Iterator[LiveServer]:
    live = LiveServer().start()
    try:
        make_table(live.url, {})
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def token_server() -> Iterator[LiveServer]:
    live = LiveServer(env={"EMBED_TOKEN": TOKEN}).start()
    try:
        make_table(live.url, {"Authorization": f"Bearer {TOKEN}"})
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    yield from chromium(window="1200,1500")


def cells(driver: webdriver.Chrome, css: str) -> list[list[str]]:
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, css)]


def settled(driver: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    """A wait that reads again when the page redrew what it was reading: the tables table is
    rebuilt at every poll, so a row found a moment ago can be gone (StaleElementReference)."""
    return WebDriverWait(driver, WAIT_SECONDS,
                         ignored_exceptions=(StaleElementReferenceException,))


def test_the_page_lists_plots_and_searches(
    browser: webdriver.Chrome, open_server: LiveServer, tmp_path: Path
) -> None:
    url = open_server.url
    requested_urls(browser)  # drop what Chromium fetched for its own start page
    browser.get(f"{url}/ui")
    wait_for(browser, "#tables tbody tr[data-table='words']")
    name, rows, dim, step, pending, *_ = settled(browser).until(
        lambda driver: cells(driver, "#tables tbody tr[data-table='words']")[0])
    assert (name, rows, dim, step, pending) == ("words", str(ROWS), str(DIM), "0", "0")

    # one point per sampled row (all 120), each carrying its label
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#plot circle.point")) == ROWS)
    points = browser.find_elements(By.CSS_SELECTOR, "#plot circle.point")
    assert sorted(point.get_attribute("data-label") for point in points) == sorted(WORDS)

    # hovering a point shows its label (the last one drawn: no other point covers it)
    ActionChains(browser).move_to_element(points[-1]).perform()
    tooltip = wait_for(browser, "#tooltip")
    assert tooltip.text == f"word{ROWS - 1} (id {ROWS - 1})"

    # the search box lists the API's neighbours, best first
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys("word3 -word4 +11")
    browser.find_element(By.ID, "search").click()
    wait_for(browser, "#results tbody tr")
    expected = httpx.post(f"{url}/v1/tables/words/neighbors", json={
        "positive": ["word3", 11], "negative": ["word4"], "k": 10}).json()
    shown = cells(browser, "#results tbody tr")
    assert [int(r[1]) for r in shown] == expected["ids"]
    assert [r[2] for r in shown] == expected["labels"]
    np.testing.assert_allclose([float(r[3]) for r in shown], expected["scores"], atol=5e-5)
    marked = {p.get_attribute("data-id") for p in
              browser.find_elements(By.CSS_SELECTOR, "#plot circle.neighbour")}
    assert marked == {str(i) for i in expected["ids"]}

    # live figures: a step applied now appears without reloading the page
    httpx.post(f"{url}/v1/tables/words/gradients", timeout=10, json={
        "ids": [1, 2], "grads": np.ones((2, DIM)).tolist(), "apply": True}).raise_for_status()
    settled(browser).until(lambda driver: driver.find_element(
        By.CSS_SELECTOR, "#tables tr[data-table='words'] td.step").text == "1")
    browser.save_screenshot(str(tmp_path / "ui.png"))  # in pytest's tmp dir, to look at
    assert foreign(requested_urls(browser), open_server) == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_with_a_token_nothing_works_without_it(
    browser: webdriver.Chrome, token_server: LiveServer
) -> None:
    url = token_server.url
    browser.get(f"{url}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{url}/ui")
    wait_for(browser, "#login")
    assert not browser.find_element(By.ID, "content").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#tables tbody tr") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#plot circle") == []
    requested_urls(browser)

    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.ID, "login-button").click()
    error = wait_for(browser, "#login-error")
    assert "refused the token" in error.text
    assert not browser.find_element(By.ID, "content").is_displayed()

    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login-button").click()
    wait_for(browser, "#tables tbody tr[data-table='words']")
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#plot circle.point")) == ROWS)
    assert not browser.find_element(By.ID, "login").is_displayed()
    assert foreign(requested_urls(browser), token_server) == []


def test_a_dynamic_table_shows_its_live_rows_and_points(
    browser: webdriver.Chrome, open_server: LiveServer
) -> None:
    """A dynamic table has no fixed size: the list shows its live rows; the plot draws them."""
    url = open_server.url
    httpx.post(f"{url}/v1/tables", json={"name": "users", "embedding_dim": 4, "seed": 1,
                                         "dynamic": {"capacity": 50}}, timeout=10)
    keys = (np.arange(70, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)).tolist()  # wraps
    httpx.post(f"{url}/v1/tables/users/gradients", timeout=10, json={
        "ids": keys, "grads": np.ones((70, 4)).tolist(), "apply": True}).raise_for_status()
    browser.get_log("browser")  # what earlier pages logged
    browser.get(f"{url}/ui")
    row = wait_for(browser, "#tables tbody tr[data-table='users']")
    assert row.find_elements(By.TAG_NAME, "td")[1].text == "50 live"
    row.click()
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#plot circle.point")) == 50)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
