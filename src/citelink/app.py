"""The Starlette application: REST, WebSocket relay and web page on one port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import asyncpg
from starlette.applications import Starlette
from starlette.routing import Route

from . import api, database
from .errors import exception_handlers
from .health import healthz, readyz
from .settings import Settings
from .web import routes as web_routes


class State(TypedDict):
    """Per-process state, built by the lifespan and reached as `request.state`."""

    settings: Settings
    pool: asyncpg.Pool


def create_app(settings: Settings) -> Starlette:
    """The app for a resolved `settings` (database URL and secret key set)."""
    assert settings.database_url and settings.secret_key, "call database.resolve() first"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        pool = await database.create_pool(settings.database_url, settings.pool_size)
        try:
            yield {"settings": settings, "pool": pool}
        finally:
            await pool.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *api.routes,
        *web_routes,
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers)
