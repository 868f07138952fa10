"""The Starlette application: REST, WebSocket relay and web page on one port."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from citelink import api
from citelink.api.notifications import Publishes, group_commit
from citelink.db.budget import WorkBudget
from citelink.db.connection import create_pool, warm
from citelink.db.pruning import Pruner
from citelink.db.scheduler import Scheduler
from citelink.errors import exception_handlers
from citelink.identity.cors import Cors
from citelink.identity.passwords import HashSlots, hash_slots
from citelink.identity.platform_tokens import PlatformTokens
from citelink.identity.throttle import SignInThrottle
from citelink.relay.hub import Hub
from citelink.relay.listener import Listener
from citelink.relay.protocol import SOCKET_PATH
from citelink.relay.websocket import notifications_socket
from citelink.server import logs
from citelink.server.health import healthz, readyz
from citelink.server.scrape import Sampler, metrics_endpoint
from citelink.settings import Settings
from citelink.web.element import routes as embed_routes
from citelink.web.page import routes as web_routes

# Pooled connections opened and warmed up at start (the others as needed).
WARM_CONNECTIONS = 4


class State(TypedDict):
    """Per-process state, built by the lifespan and reached as `request.state`."""

    settings: Settings
    pool: asyncpg.Pool
    hub: Hub
    listener: Listener
    passwords: HashSlots
    sign_ins: SignInThrottle
    # Each user's budget of database work (REST and sockets alike).
    work: WorkBudget
    # Concurrent publishes of one caller share statements (citelink.db.group_commit).
    publishes: Publishes
    # None when no platform is configured: platform tokens are then refused.
    platform: PlatformTokens | None
    sampler: Sampler


def create_app(settings: Settings) -> App:
    """The app for a resolved `settings` (database URL and secret key set)."""
    assert settings.database_url and settings.secret_key, "call resolve() first"
    # Read now, so that a bad key file stops the start with one clear line.
    platform = PlatformTokens.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        pool = await create_pool(
            settings.resolved_url,
            settings.pool_size,
            connect_seconds=settings.db_connect_seconds,
            query_seconds=settings.db_query_seconds,
        )
        # Warm before the first request: see citelink.db.connection._warm_up.
        await warm(pool, min(settings.pool_size, WARM_CONNECTIONS))
        listener = Listener(settings.resolved_url, probe_seconds=settings.listener_probe_seconds)
        hub = Hub(pool, settings, barrier=listener.barrier, on_failure=listener.reconnect)
        publishes = group_commit()
        sampler = Sampler(
            lambda: (peer.queue.qsize() for peer in hub.peers()),
            lambda: listener.alive,
            pool,
            lambda: (publishes.waiting, publishes.shared),
        )
        scheduler = Scheduler(pool, statement_seconds=settings.db_query_seconds)
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
                "work": WorkBudget(settings.concurrency(False), settings.concurrency(True)),
                "publishes": publishes,
                "platform": platform,
                "sampler": sampler,
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
        Route("/metrics", metrics_endpoint, methods=["GET"]),
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
