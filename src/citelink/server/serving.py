"""`citelink serve`: migrate, bind the port, serve in this process or in N
worker processes on the same port, and stop cleanly.

"serving on" is printed once the port is bound and the app has started, never
before. Database settings that cannot work, then a port in use, a bad host or
a privileged port, are one line (a `Problem`) before anything starts.

With `--workers N` the port is served by N processes (citelink/server/workers.py).

The embedded PostgreSQL that `serve` started is stopped when it exits, unless
`--keep-db` is given; one that was already running is left running.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

from citelink.db import embedded
from citelink.db.connection import check, connect, resolve
from citelink.db.migrations import migrate
from citelink.db.queries import Q
from citelink.problems import Problem
from citelink.server.uvicorn_server import announce, bind, make_server, url_of
from citelink.server.workers import Workers
from citelink.settings import Settings


class Stopped(BaseException):
    """SIGTERM arrived: unwind (stopping what was started), then exit by it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


async def _has_users(url: str) -> bool:
    conn = await connect(url)
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
    # Settings that cannot work first (the likelier problem: a container on the
    # host's network without its database URL finds port 8000 taken too), then
    # the port, before a database starts.
    check(settings)
    sock = bind(host, port)
    signum = None
    try:
        settings = resolve(settings)
        migrate(settings.resolved_url)
        lines = [] if asyncio.run(_has_users(settings.resolved_url)) else [first_run_hint]
        if workers == 1:
            _serve_here(settings, host, sock, forwarded_allow_ips, lines)
        else:
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
