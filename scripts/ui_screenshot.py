"""Screenshot of /ui in Debian's headless Chromium: a table selected and a neighbour search done.

    .venv/bin/python scripts/ui_screenshot.py URL TABLE QUERY OUT.png [--token TOKEN]

Used for docs/ui-explore.png (after the word2vec example trained on real text). Needs chromium
and chromium-driver (apt-get install chromium chromium-driver) and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.browser import chromium, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "table", "query"):
        parser.add_argument(name)
    parser.add_argument("out", type=Path)
    parser.add_argument("--token")
    args = parser.parse_args()
    browser_session = chromium(window="1180,1480")
    browser = next(browser_session)
    try:
        browser.get(f"{args.url}/ui")
        if args.token:
            wait_for(browser, "#token").send_keys(args.token)
            browser.find_element(By.ID, "login-button").click()
        wait_for(browser, f"#tables tr[data-table='{args.table}']").click()
        WebDriverWait(browser, 30).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, "#plot circle.point"))
        box = browser.find_element(By.ID, "query")
        box.clear()
        box.send_keys(args.query)
        browser.find_element(By.ID, "search").click()
        wait_for(browser, "#results tbody tr")
        WebDriverWait(browser, 30).until(  # a second poll of /metrics gives the rates
            lambda driver: driver.find_element(By.CSS_SELECTOR, "td.rate").text != "-")
        browser.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        browser_session.close()


if __name__ == "__main__":
    main()
