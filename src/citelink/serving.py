"""`citelink serve`: migrate, bind the port, serve in this process or in N
worker processes on the same port, and stop cleanly.

"serving on" is printed once the port is bound and the app has started, never
before. A port in use, a bad host or a privileged port is one line (a
`Problem`) before anything else happens.

With `--workers N` the port is served by N processes (citelink/worker.py).

The embedded PostgreSQL that `serve` started is stopped when it exits, unless
`--keep-db` is given; one that was already running is left running.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from . import database, embedded
from .app import GoingAwayServer, server_config
from .failures import Problem
from .logs import install_token_filter, log_config
from .migrations import migrate
from .queries import Q
from .settings import Settings

log = logging.getLogger("citelink.serve")

# uvicorn's wait for requests in flight on shutdown.
GRACEFUL_SECONDS = 10
BACKLOG = 2048


class Stopped(BaseException):
    """SIGTERM arrived: unwind (stopping what was started), then exit by it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


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

    async def startup(self, sockets: list | None = None) -> None:
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


async def _has_users(url: str) -> bool:
    conn = await database.connect(url)
    try:
        return bool(await conn.fetchval(Q.count_users))
    finally:
        await conn.close()


def serve(
    *,
    host: str,
    port: int | None,
    workers: int | None,
    keep_db: bool,
    forwarded_allow_ips: str,
    first_run_hint: str,
) -> int:
    """The `citelink serve` command; `port` and `workers` default to the settings."""
    # Until uvicorn (or the workers' watcher) takes over, SIGTERM unwinds too.
    signal.signal(signal.SIGTERM, _raise_stopped)
    settings = Settings.from_env()
    port = settings.port if port is None else port
    workers = settings.workers if workers is None else workers
    if workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise Problem("--workers needs SO_REUSEPORT (Linux, BSD, macOS): serve one process")
    own_database = settings.database_url is None and embedded.status(settings.data_dir) is None
    # The port before anything else: one in use is told before a database starts.
    sock = bind(host, port)
    signum = None
    try:
        settings = database.resolve(settings)
        migrate(settings.database_url)
        lines = [] if asyncio.run(_has_users(settings.database_url)) else [first_run_hint]
        if workers == 1:
            _serve_here(settings, host, sock, forwarded_allow_ips, lines)
        else:
            from .worker import Workers  # it builds on this module

            Workers(settings, host, sock, workers, forwarded_allow_ips, lines).run()
    except Stopped as stopped:
        signum = stopped.signum
    finally:
        sock.close()
        if own_database and not keep_db and embedded.stop(settings.data_dir):
            announce("stopped the embedded PostgreSQL it had started", settings)
    if signum is not None:
        # Exit by the signal, as uvicorn does, for whoever supervises us.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
    return 0


def _serve_here(
    settings: Settings, host: str, sock: socket.socket, forwarded_allow_ips: str, lines: list[str]
) -> None:
    def started() -> None:
        for text in [f"serving on {url_of(host, sock)}", *lines]:
            announce(text, settings)

    # uvicorn handles SIGTERM and SIGINT while it runs, then raises them again
    # for the handlers it found (ours: Stopped, KeyboardInterrupt).
    make_server(settings, host, forwarded_allow_ips, started).run(sockets=[sock])
