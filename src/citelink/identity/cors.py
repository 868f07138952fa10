"""Which browser pages may call citelink: CITELINK_CORS_ORIGINS, besides its own origin.

REST: Starlette's CORS middleware, with citelink's error shape. A preflight
from an origin not listed (or for a method or header not allowed) is a 403
or 400 JSON error; a simple request from one is served without CORS headers,
so the browser withholds the answer from the page (a non-browser client,
which sends no Origin, is not concerned).

Socket: browsers do not apply CORS to WebSockets, so the handshake's Origin
is checked here. A page of the service's own origin (the Origin's host is
the Host it connected to) or of a listed one may open a socket; any other is
accepted, then closed with 4403 "origin not allowed" (a refused handshake
reaches JavaScript as a bare 1006, see citelink.relay.websocket). A client without
an Origin header (a backend, `citelink listen`) is no browser page and is let
through: the token is what authenticates it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from citelink.errors import error_response
from citelink.settings import Settings

ORIGIN_REFUSED = 4403
REFUSED = "origin not allowed"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
HEADERS = ["Authorization", "Content-Type"]
# Headers a page may read: a 429's or 503's Retry-After, the request id.
EXPOSED = ["Retry-After", "X-Request-ID"]


class Cors(CORSMiddleware):
    def __init__(self, app: ASGIApp, settings: Settings):
        super().__init__(
            app,
            allow_origins=list(settings.cors_origins),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            expose_headers=EXPOSED,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Without an Origin header no browser page asks: nothing to check or
        # add (Starlette's would wrap every answer to say Vary: Origin).
        if scope["type"] == "http" and not any(k == b"origin" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code == 200:
            return answer
        if not self.is_allowed_origin(request_headers["origin"]):
            refused = error_response(403, REFUSED)
        else:
            detail = bytes(answer.body).decode().replace("Disallowed CORS", "not allowed:")
            refused = error_response(400, detail)
        refused.headers["Vary"] = "Origin"
        return refused


def socket_origin_allowed(scope: Scope, settings: Settings) -> bool:
    """True when the handshake of `scope` may open a socket (see the module docstring)."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin.lower().rstrip("/") in settings.cors_origins:
        return True
    host = headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()
