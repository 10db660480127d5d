"""``GET /docs`` (Swagger UI) and ``GET /redoc`` (ReDoc), working without a network.

FastAPI's own pages load their scripts, stylesheet and favicon from public CDNs, so on a machine with no
internet access they stay blank. These pages are FastAPI's, pointed at copies served by the service
itself: the files come with the ``fastapi-offline`` package (Swagger UI 5, Apache-2.0; ReDoc 2, MIT), which
is a dependency. Like ``/openapi.json``, the pages and their files need the API key when one is set.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
#: The files the pages load, by the name they are served under, with their media types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
#: Browsers may keep the files an hour (they change only with the fastapi-offline package).
CACHE_CONTROL = "max-age=3600"
#: The pages may load nothing from elsewhere: ReDoc's footer would fetch its vendor's logo from a CDN, and
#: the browser now refuses that before it leaves the machine. (Both pages start with an inline script.)
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)


def assets_dir() -> Path:
    """Where the ``fastapi-offline`` package keeps the Swagger UI and ReDoc files."""
    return Path(str(files("fastapi_offline").joinpath("static")))


def _asset_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    html = get_swagger_ui_html(
        openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=_asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset_url(request, "swagger-ui.css"),
        swagger_favicon_url=_asset_url(request, "favicon.png"),
    )
    return _page(html)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    app = request.app
    html = get_redoc_html(
        openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=_asset_url(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset_url(request, "favicon.png"),
        with_google_fonts=False,
    )
    return _page(html)


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, detail=f"no such file; the docs' files are {sorted(ASSETS)}")
    return FileResponse(assets_dir() / name, media_type=media_type, headers={"Cache-Control": CACHE_CONTROL})
