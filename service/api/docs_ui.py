"""/docs (Swagger UI) and /redoc (ReDoc), every file served from the package itself.

FastAPI's own pages load Swagger UI, ReDoc and Google's fonts from public CDNs; where those
cannot be reached (training clusters are often cut off from the internet) /docs is a blank page.
Here the same pages point at `/docs/assets/...`, the files of docs_assets/, which
scripts/docs_assets.py takes from pinned npm packages (swagger-ui-dist, redoc, @fontsource) and
tests/api/test_docs_assets.py checks against the digests in docs_assets/manifest.json. The
bearer token flow ("Authorize") is Swagger UI's own; the pages, the assets and the OpenAPI
document stay open when EMBED_TOKEN is set (their routes are marked open:
service.api.middleware.routes).

Both pages carry a Content-Security-Policy that lets them load nothing from another origin: the
promise above then holds in every browser, online too (ReDoc's sidebar would otherwise fetch
its "by Redocly" logo from cdn.redoc.ly; refused, ReDoc leaves the image out).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

from service.api.middleware.routes import route_policy

ASSETS_DIR = Path(__file__).with_name("docs_assets")
ASSETS_PATH = "/docs/assets"
# Only the files the manifest lists are served (no directory listing, no path to walk out of).
ASSET_FILES = frozenset(json.loads((ASSETS_DIR / "manifest.json").read_text())["sha256"])
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".png": "image/png", ".woff2": "font/woff2"}
DOCS_PATH, REDOC_PATH, OAUTH2_REDIRECT_PATH = "/docs", "/redoc", "/docs/oauth2-redirect"
# Same origin only. Inline styles: ReDoc (styled-components) and Swagger UI write <style> tags;
# ReDoc's search runs in a worker made from a blob; images may be data: URIs.
CSP = ("default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; worker-src 'self' blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'")
# The faces ReDoc's default theme asks for (FastAPI's page loads them from Google's CDN).
FONT_FACES = [(family, weight) for family in ("Montserrat", "Roboto") for weight in (300, 400, 700)]


def font_face_css(assets: str) -> str:
    """@font-face rules for the fonts shipped in docs_assets/fonts (latin subset, woff2)."""
    return "\n".join(
        f"@font-face {{ font-family: '{family}'; font-style: normal; font-weight: {weight}; "
        f"font-display: swap; src: url({assets}/fonts/{family.lower()}-latin-{weight}-normal"
        f".woff2) format('woff2'); }}"
        for family, weight in FONT_FACES
    )


def redoc_html(title: str, openapi_url: str, assets: str) -> str:
    """FastAPI's ReDoc page (get_redoc_html), with the fonts and the script served by us."""
    return f"""<!DOCTYPE html>
<html>
<head>
<title>{html.escape(title)}</title>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="shortcut icon" href="{assets}/favicon-32x32.png">
<style>
{font_face_css(assets)}
body {{ margin: 0; padding: 0; }}
</style>
</head>
<body>
<noscript>ReDoc requires JavaScript to show the API documentation.</noscript>
<redoc spec-url="{html.escape(openapi_url)}"></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


def with_csp(page: HTMLResponse) -> HTMLResponse:
    """The page with a Content-Security-Policy that admits its own inline scripts by digest."""
    body = bytes(page.body).decode()
    digests = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script>(.*?)</script>", body, flags=re.DOTALL)
    )
    page.headers["Content-Security-Policy"] = CSP.format(scripts=digests)
    return page


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /docs/oauth2-redirect, /redoc and /docs/assets/* on `app`, which must be
    built with docs_url=None and redoc_url=None (so that FastAPI adds no CDN pages of its own)."""
    if app.openapi_url is None:
        raise ValueError("the API pages need the OpenAPI document: openapi_url is None")
    openapi_path = app.openapi_url

    def urls(request: Request) -> tuple[str, str, str]:
        """The paths of the OpenAPI document, the assets and the OAuth2 redirect page, behind a
        proxy's root_path too."""
        root = request.scope.get("root_path", "").rstrip("/")
        return root + openapi_path, root + ASSETS_PATH, root + OAUTH2_REDIRECT_PATH

    @app.get(DOCS_PATH, include_in_schema=False)
    @route_policy(open=True)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets, oauth2_redirect = urls(request)
        return with_csp(get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=oauth2_redirect,
            # No spec validator badge: it would send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        ))

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    @route_policy(open=True)
    async def swagger_ui_redirect() -> HTMLResponse:
        return with_csp(get_swagger_ui_oauth2_redirect_html())

    @app.get(ASSETS_PATH + "/{path:path}", include_in_schema=False)
    @route_policy(open=True)
    async def docs_asset(path: str) -> FileResponse:
        if path not in ASSET_FILES:
            raise HTTPException(404, f"path {path!r} is not a file of the API pages")
        return FileResponse(
            ASSETS_DIR / path,
            media_type=MEDIA_TYPES.get(Path(path).suffix, "text/plain; charset=utf-8"),
            headers={"Cache-Control": "public, max-age=3600"},
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    @route_policy(open=True)
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets, _ = urls(request)
        return with_csp(HTMLResponse(redoc_html(f"{app.title} - ReDoc", openapi_url, assets)))
