"""/docs and /redoc reference only files the service serves itself, and those files are exactly
the ones scripts/docs_assets.py took from the pinned npm packages (issue 19, part 1).

The browser test (test_docs_browser.py) shows the pages render offline; these check the same
promise without a browser, on every page and asset, in-process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from service.api.docs_ui import ASSETS_DIR, ASSETS_PATH

MANIFEST = json.loads((ASSETS_DIR / "manifest.json").read_text())
TOKEN = "docs-token"
PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app(token=TOKEN)) as client:  # the pages must not need the token
        yield client


REFERENCE = re.compile(
    r"""(?:src|href|spec-url)=["']([^"']+)["']|url\(([^)]+)\)|url: '([^']+)'""")


def references(page: str) -> set[str]:
    """Every URL a page's HTML loads: src=, href=, ReDoc's spec-url=, CSS url(...) and Swagger
    UI's `url: '...'` (the OpenAPI document)."""
    return {"".join(groups) for groups in REFERENCE.findall(page)}


def test_every_shipped_file_is_a_pinned_package_file_unchanged() -> None:
    shipped = {path.relative_to(ASSETS_DIR).as_posix() for path in ASSETS_DIR.rglob("*")
               if path.is_file()} - {"manifest.json"}
    taken = {destination for package in MANIFEST["packages"].values()
             for destination in package["files"].values()}
    assert shipped == taken == set(MANIFEST["sha256"])
    for path, digest in MANIFEST["sha256"].items():
        assert hashlib.sha256((ASSETS_DIR / path).read_bytes()).hexdigest() == digest, path
    for name, package in MANIFEST["packages"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), name  # an exact pin
        assert package["integrity"].startswith("sha512-"), name


@pytest.mark.parametrize("page", PAGES)
def test_pages_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    reply = client.get(page)
    assert reply.status_code == 200
    assert "://" not in reply.text.replace("window.location.origin", "")
    for url in references(reply.text):
        assert url.startswith("/"), (page, url)
        if url.startswith(ASSETS_PATH + "/"):
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert hashlib.sha256(asset.content).hexdigest() == \
                MANIFEST["sha256"][url.removeprefix(ASSETS_PATH + "/")]


def test_pages_reference_the_pinned_bundles(client: TestClient) -> None:
    assert {f"{ASSETS_PATH}/swagger-ui-bundle.js", f"{ASSETS_PATH}/swagger-ui.css",
            "/openapi.json"} <= references(client.get("/docs").text)
    redoc = references(client.get("/redoc").text)
    assert {f"{ASSETS_PATH}/redoc.standalone.js", "/openapi.json"} <= redoc
    assert {url for url in redoc if url.endswith(".woff2")} == {
        f"{ASSETS_PATH}/{path}" for path in MANIFEST["sha256"] if path.endswith(".woff2")}


@pytest.mark.parametrize("page", PAGES)
def test_pages_forbid_other_origins_and_admit_only_their_own_inline_script(
    client: TestClient, page: str
) -> None:
    reply = client.get(page)
    policy = reply.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    script_source = re.search(r"script-src ([^;]*)", policy)
    assert script_source is not None
    inline = re.findall(r"<script>(.*?)</script>", reply.text, flags=re.DOTALL)
    digests = {f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
               for s in inline}
    assert set(script_source.group(1).split()) == {"'self'"} | digests
    assert "unsafe-eval" not in policy


def test_assets_have_their_media_types(client: TestClient) -> None:
    expected = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                "favicon-32x32.png": "image/png", "fonts/roboto-latin-400-normal.woff2":
                "font/woff2", "licenses/redoc.LICENSE": "text/plain"}
    for path, media_type in expected.items():
        reply = client.get(f"{ASSETS_PATH}/{path}")
        assert reply.headers["content-type"].split(";")[0] == media_type, path


@pytest.mark.parametrize("path", ["manifest.json", "nothing.js", "%2e%2e/docs_ui.py",
                                  "..%2fdocs_ui.py", "fonts/", ""])
def test_only_the_manifest_files_are_served(client: TestClient, path: str) -> None:
    reply = client.get(f"{ASSETS_PATH}/{path}")
    assert reply.status_code == 404
    assert reply.json()["detail"].startswith("path ")


def test_behind_a_proxy_prefix_the_pages_point_under_it(
    make_app: Callable[..., FastAPI]
) -> None:
    with TestClient(make_app(), root_path="/embeddings") as client:
        docs = references(client.get("/docs").text)
        redoc = references(client.get("/redoc").text)
    assert f"/embeddings{ASSETS_PATH}/swagger-ui-bundle.js" in docs
    assert "/embeddings/openapi.json" in docs | redoc
    assert all(url.startswith("/embeddings/") for url in docs | redoc)
