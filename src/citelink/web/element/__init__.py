"""The drop-in inbox: `GET /embed/citelink-inbox.js`, one ES module (the
<citelink-inbox> element and the headless CitelinkClient), and
`GET /embed/demo`, a plain host page that embeds it under hostile CSS.

The files sit beside this module and ship in the wheel, as citelink/web/page's do.
The module is public code that other origins' pages load (`<script
type="module">` fetches in CORS mode), so it is served to any origin; what
it then talks to is the socket, which checks Origin (citelink.identity.cors).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

HERE = Path(__file__).parent
MODULE_HEADERS = {
    "Cache-Control": "no-cache",
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
DEMO_HEADERS = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    # The demo's hostile CSS is inline on purpose; scripts are its own files,
    # and it connects to its own origin only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


async def module(request: Request) -> Response:
    return FileResponse(
        HERE / "citelink-inbox.js", media_type="text/javascript", headers=MODULE_HEADERS
    )


async def demo(request: Request) -> Response:
    return FileResponse(HERE / "demo.html", media_type="text/html", headers=DEMO_HEADERS)


async def demo_script(request: Request) -> Response:
    return FileResponse(HERE / "demo.js", media_type="text/javascript", headers=DEMO_HEADERS)


routes: list[BaseRoute] = [
    Route("/embed/citelink-inbox.js", module, methods=["GET"]),
    Route("/embed/demo", demo, methods=["GET"]),
    Route("/embed/demo.js", demo_script, methods=["GET"]),
]
