"""The built-in web inbox: one static page at `/`, its script and stylesheet.

The files sit beside this module and ship in the wheel; there is no build
step and nothing is loaded from another origin. Only the named files are
served (not the whole package folder). A strict Content-Security-Policy
backs up the page's own escaping: no inline script, nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

HERE = Path(__file__).parent
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
HEADERS = {
    # Revalidate every time (the ETag makes that cheap), so an upgrade shows at once.
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


async def index(request: Request) -> Response:
    return FileResponse(HERE / "index.html", media_type="text/html", headers=HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise HTTPException(404, "not found")
    return FileResponse(HERE / name, media_type=ASSETS[name], headers=HEADERS)


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Route("/static/{name}", asset, methods=["GET"]),
]
