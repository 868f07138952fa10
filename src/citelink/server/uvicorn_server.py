"""uvicorn for one process: its configuration for the app, the port it serves
on, and the server that says when it has started and closes sockets with
1001 on the way out. `citelink serve` (citelink.server.serving) and each of
its workers (citelink.server.workers) run one, as do the tests."""

from __future__ import annotations

import errno
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from citelink.problems import Problem
from citelink.relay.hub import Hub
from citelink.server.app import create_app
from citelink.server.connection_guards import (
    ConnectionGuard,
    GuardedHttpProtocol,
    GuardedWebSocketProtocol,
    connection_cap,
    trusted_hosts,
)
from citelink.server.logs import install_token_filter, log_config
from citelink.settings import Settings

log = logging.getLogger("citelink.serve")

# uvicorn's wait for requests in flight on shutdown.
GRACEFUL_SECONDS = 10
BACKLOG = 2048


def server_config(settings: Settings, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for serving the app of `settings`.

    HTTP and WebSocket connections run through citelink.server.connection_guards (head, time
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
        # uvicorn calls `http` as it would a protocol class (its type says a class).
        http=functools.partial(GuardedHttpProtocol, settings=settings, guard=guard),  # type: ignore[arg-type]
        ws=GuardedWebSocketProtocol,
        # Typed int, but only ever handed to call_later: a float works.
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        lifespan = getattr(self, "lifespan", None)  # absent if startup never ran
        hub: Hub | None = lifespan.state.get("hub") if lifespan else None
        if hub is not None:
            await hub.close_all(1001, "server shutting down")
        await super().shutdown(sockets)


def create_server(settings: Settings, host: str, port: int, **options: Any) -> GoingAwayServer:
    """The uvicorn server for `settings`, as the tests run it."""
    return GoingAwayServer(server_config(settings, host, port, **options))


def announce(text: str, settings: Settings) -> None:
    """A line for the person who ran `serve`: on stdout, or a JSON log line."""
    if settings.log_format == "json":
        log.info(text)
    else:
        print(f"citelink: {text}", flush=True)


def _bind_failure(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is in use: stop what holds it (another citelink serve?) "
            "or choose another port with --port or CITELINK_PORT"
        )
    if exc.errno == errno.EACCES:
        return f"no permission to bind port {port} (below 1024 needs privileges): choose another"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: give --host 127.0.0.1 or 0.0.0.0"
    return f"cannot bind {host}:{port}: {exc.strerror}"


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise Problem(
            f"cannot serve on {host!r}: unknown host; give --host 127.0.0.1 or 0.0.0.0"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise Problem(_bind_failure(exc, host, port)) from None
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class Server(GoingAwayServer):
    """The app's uvicorn server, which says when it has started."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]):
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def make_server(
    settings: Settings, host: str, forwarded_allow_ips: str, on_started: Callable[[], None]
) -> Server:
    """The server of one process (`serve`, or one worker)."""
    config = server_config(
        settings,
        host,
        0,  # the socket is bound already; uvicorn only serves on it
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        log_config=log_config(settings.log_format),
    )
    install_token_filter()
    return Server(config, on_started)
