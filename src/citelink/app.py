"""The Starlette application: REST, WebSocket relay and web page on one port."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from . import api, database, logs, metrics
from .connections import (
    ConnectionGuard,
    GuardedHttpProtocol,
    GuardedWebSocketProtocol,
    connection_cap,
    trusted_hosts,
)
from .cors import Cors
from .embed import routes as embed_routes
from .errors import exception_handlers
from .health import healthz, readyz
from .hub import Hub
from .listener import Listener
from .passwords import HashSlots, hash_slots
from .platform_tokens import PlatformTokens
from .protocol import SOCKET_PATH
from .pruning import Pruner
from .scheduler import Scheduler
from .settings import Settings
from .sockets import notifications_socket
from .throttle import SignInThrottle
from .web import routes as web_routes


class State(TypedDict):
    """Per-process state, built by the lifespan and reached as `request.state`."""

    settings: Settings
    pool: asyncpg.Pool
    hub: Hub
    listener: Listener
    passwords: HashSlots
    sign_ins: SignInThrottle
    # None when no platform is configured: platform tokens are then refused.
    platform: PlatformTokens | None


def create_app(settings: Settings) -> App:
    """The app for a resolved `settings` (database URL and secret key set)."""
    assert settings.database_url and settings.secret_key, "call database.resolve() first"
    # Read now, so that a bad key file stops the start with one clear line.
    platform = PlatformTokens.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        pool = await database.create_pool(
            settings.database_url,
            settings.pool_size,
            connect_seconds=settings.db_connect_seconds,
            query_seconds=settings.db_query_seconds,
        )
        listener = Listener(settings.database_url, probe_seconds=settings.listener_probe_seconds)
        hub = Hub(pool, settings, barrier=listener.barrier, on_failure=listener.reconnect)
        sampler = metrics.Sampler(hub, listener, pool)
        scheduler = Scheduler(pool)
        pruner = Pruner(pool, settings)
        hub.start()
        await listener.start(hub)
        sampler.start()
        scheduler.start()
        pruner.start()
        # Long-lived objects (one set per socket) make full collections slow;
        # collect young objects less often and never rescan what start-up built.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        try:
            yield {
                "settings": settings,
                "pool": pool,
                "hub": hub,
                "listener": listener,
                "passwords": HashSlots(settings.password_hash_slots or hash_slots()),
                "sign_ins": SignInThrottle(settings),
                "platform": platform,
            }
        finally:
            # Under uvicorn the sockets are gone by now (GoingAwayServer, below).
            await hub.close_all(1001, "server shutting down")
            await pruner.stop()
            await scheduler.stop()
            await sampler.stop()
            await listener.stop()
            await hub.stop()
            await pool.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *api.routes,
        *web_routes,
        *embed_routes,
    ]
    return App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=exception_handlers,
        middleware=[Middleware(Cors, settings=settings)],
    )


class App(Starlette):
    """Starlette, with the notifications socket handed straight to its handler.

    A socket's coroutine stays suspended for as long as it is open, and with it
    every frame of the ASGI chain it came through (error and exception
    middleware, router, route, exception wrapper): memory that each of 10,000
    sockets would hold, for middleware that does nothing for this route.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == SOCKET_PATH:
            logs.begin_request(scope)
            await notifications_socket(WebSocket(scope, receive, send))
        elif scope["type"] == "http":
            request_id = logs.begin_request(scope)
            await super().__call__(scope, receive, logs.answer_request_id(send, request_id))
        else:
            await super().__call__(scope, receive, send)


def server_config(settings: Settings, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for serving the app of `settings`.

    HTTP and WebSocket connections run through citelink.connections (head, time
    and connection limits). Proxies trusted for X-Forwarded-For
    (`forwarded_allow_ips`, uvicorn's default when not given) are exempt from
    the per-client cap."""
    options.setdefault("forwarded_allow_ips", "127.0.0.1,::1")
    guard = ConnectionGuard(
        connection_cap(settings),
        settings.max_connections_per_client,
        trusted_hosts(options["forwarded_allow_ips"]),
    )
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        http=functools.partial(GuardedHttpProtocol, settings=settings, guard=guard),  # type: ignore[arg-type]
        ws=GuardedWebSocketProtocol,
        timeout_keep_alive=settings.http_keepalive_seconds,  # type: ignore[arg-type]
        # On every answer, uvicorn's own (400, 500) and the protocols' included:
        # browsers must not guess a type other than the one declared.
        headers=[("X-Content-Type-Options", "nosniff")],
        ws_max_size=settings.ws_max_frame_bytes,
        # Frames are small JSON; a zlib context per socket (browsers always
        # offer permessage-deflate) would cost far more memory than it saves.
        ws_per_message_deflate=False,
        **options,
    )


class GoingAwayServer(uvicorn.Server):
    """uvicorn, except that open sockets are closed with 1001 (going away).

    On shutdown uvicorn closes every open WebSocket itself, with 1012, before
    the app's lifespan ends; the hub gets there first.
    """

    async def shutdown(self, sockets: list | None = None) -> None:
        lifespan = getattr(self, "lifespan", None)  # absent if startup never ran
        hub: Hub | None = lifespan.state.get("hub") if lifespan else None
        if hub is not None:
            await hub.close_all(1001, "server shutting down")
        await super().shutdown(sockets)


def create_server(settings: Settings, host: str, port: int, **options: Any) -> GoingAwayServer:
    """The uvicorn server for `settings`, as the tests run it."""
    return GoingAwayServer(server_config(settings, host, port, **options))
