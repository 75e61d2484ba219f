"""/ui: a page to look at the tables, served from the package (service/api/ui/), no CDN.

Three files, written by hand and shipped as they are (no build step): index.html, app.js and
style.css. The page lists the tables with live figures read from the service's own /metrics
(rows, step, pending rows, rows updated per second), draws a 2-D PCA of a sample of the chosen
table (GET /v1/tables/{name}/projection, computed by the server) as an SVG scatter plot with
labels on hover, and finds neighbours (POST /v1/tables/{name}/neighbors) of a label or an id.

The page and its three files are open (their routes are marked open for
service.api.middleware.auth): they hold no data. Everything the
page shows comes from /v1 routes, which need the token when EMBED_TOKEN is set: the page then
asks for it, keeps it in the tab's sessionStorage and sends it as `Authorization: Bearer`; until
it has a token the service accepts, it shows nothing but the question. A Content-Security-Policy
keeps the page to its own origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from service.api.middleware.routes import route_policy

UI_DIR = Path(__file__).with_name("ui")
UI_PATH = "/ui"
UI_ASSETS_PATH = "/ui/assets"
UI_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
           "X-Content-Type-Options": "nosniff"}


def install_ui(app: FastAPI) -> None:
    """Serve /ui and /ui/assets/{app.js, style.css} on `app`."""

    @app.get(UI_PATH, include_in_schema=False)
    @route_policy(open=True)  # the page asks for the token itself
    async def ui_page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers=HEADERS)

    @app.get(UI_ASSETS_PATH + "/{file}", include_in_schema=False)
    @route_policy(open=True)
    async def ui_asset(file: str) -> FileResponse:
        if file not in UI_FILES:
            raise HTTPException(404, f"{file!r} is not a file of the /ui page")
        return FileResponse(UI_DIR / file, media_type=UI_FILES[file], headers=HEADERS)
