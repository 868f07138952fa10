"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from citelink.responses import json_response


async def healthz(request: Request) -> Response:
    """The process is up and serving."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers within a second and the listener is
    LISTENing (else this process's sockets would miss events)."""
    listening = request.state.listener.alive
    try:
        async with asyncio.timeout(1):
            await request.state.pool.fetchval("SELECT 1")
    except (OSError, TimeoutError, Exception):
        body = {"status": "unavailable", "database": False, "listener": listening}
        return json_response(body, status=503)
    if not listening:
        body = {"status": "unavailable", "database": True, "listener": False}
        return json_response(body, status=503)
    return json_response({"status": "ok", "database": True, "listener": True})
