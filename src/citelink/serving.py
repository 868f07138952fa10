"""`citelink serve`: migrate, bind the port, serve in this process or in N
worker processes on the same port, and stop cleanly.

"serving on" is printed once the port is bound and the app has started, never
before. A port in use, a bad host or a privileged port is one line (a
`Problem`) before anything else happens.

Workers (`--workers N`): the port is shared with SO_REUSEPORT, one listening
socket per worker, so the kernel spreads new connections evenly (a socket
shared by all would let the worker that wakes first take most of a burst).
Each worker is a process of its own (`python -m citelink.worker`) with its
pool and its LISTEN connection, so every socket on any worker gets every
event. This process watches them: it announces the port once all are ready,
replaces a worker that dies after it was ready, stops everything if one fails
to start, and on SIGTERM or Ctrl-C stops them all gracefully (each closes its
sockets with 1001 and finishes the requests in flight). A worker whose parent
vanishes stops by itself.

The embedded PostgreSQL that `serve` started is stopped when it exits, unless
`--keep-db` is given; one that was already running is left running.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import logging.config
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import uvicorn

from . import database, embedded
from .app import server_config
from .failures import Problem
from .logs import install_token_filter, log_config
from .migrations import migrate
from .queries import Q
from .settings import Settings
from .sockets import GoingAwayServer

log = logging.getLogger("citelink.serve")

# uvicorn's wait for requests in flight on shutdown; a worker gets a little
# longer to exit after SIGTERM before it is killed.
GRACEFUL_SECONDS = 10
STOP_SECONDS = GRACEFUL_SECONDS + 5
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


@dataclass
class Worker:
    """One worker process and the pipe it reports on: its pid once started,
    then end of file when it exits."""

    index: int
    process: subprocess.Popen
    reports: int
    ready: bool = False


class Workers:
    """N `citelink.worker` processes serving one port, watched from here."""

    def __init__(
        self,
        settings: Settings,
        host: str,
        reserved: socket.socket,
        count: int,
        forwarded_allow_ips: str,
        lines: list[str],
    ):
        self.settings = settings
        self.host = host
        self.count = count
        self.forwarded_allow_ips = forwarded_allow_ips
        self.lines = lines
        # A plain socket holds the port until the workers bind theirs: a port
        # held by anyone, another citelink included, was refused by it, where
        # SO_REUSEPORT sockets alone would have shared it.
        self.reserved = reserved
        self.port = reserved.getsockname()[1]
        self.url = url_of(host, reserved)
        self.metrics_dir = tempfile.mkdtemp(prefix="citelink-metrics-")
        self.workers: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        # Parent alive: each worker watches the read end and stops at its end.
        self.lifeline_read, self.lifeline_write = os.pipe()

    def _env(self) -> dict[str, str]:
        settings = self.settings
        assert settings.database_url and settings.secret_key
        return os.environ | {
            # Resolved here: the workers neither start nor migrate a database.
            "CITELINK_DATABASE_URL": settings.database_url,
            "CITELINK_SECRET_KEY": settings.secret_key,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
        }

    def _start(self, index: int) -> Worker:
        sock = bind(self.host, self.port, reuse_port=True)
        reports_read, reports_write = os.pipe()
        fds = (sock.fileno(), reports_write, self.lifeline_read)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "citelink.worker",
                *("--socket-fd", str(sock.fileno())),
                *("--report-fd", str(reports_write)),
                *("--lifeline-fd", str(self.lifeline_read)),
                *("--host", self.host),
                *("--forwarded-allow-ips", self.forwarded_allow_ips),
            ],
            env=self._env(),
            pass_fds=fds,
        )
        # Only the worker may hold its socket: a copy here would keep it in the
        # port's group after the worker died, and its share of connections
        # would wait for an accept that never comes.
        sock.close()
        os.close(reports_write)
        worker = Worker(index, process, reports_read)
        self.selector.register(reports_read, selectors.EVENT_READ, worker)
        return worker

    def run(self) -> None:
        logging.config.dictConfig(log_config(self.settings.log_format))
        wakeup_read, wakeup_write = socket.socketpair()
        wakeup_read.setblocking(False)
        wakeup_write.setblocking(False)
        self.selector.register(wakeup_read, selectors.EVENT_READ, None)
        handlers = {
            sig: signal.signal(sig, lambda signum, frame: None)
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous_wakeup = signal.set_wakeup_fd(wakeup_write.fileno())
        signum = None
        try:
            self.reserved.close()
            self.workers = [self._start(i) for i in range(self.count)]
            signum = self._watch(wakeup_read)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.selector.close()
            wakeup_read.close()
            wakeup_write.close()
            os.close(self.lifeline_read)
            os.close(self.lifeline_write)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        signal.raise_signal(signum)

    def _watch(self, wakeup: socket.socket) -> int:
        """Until a signal asks to stop; return it."""
        announced = False
        while True:
            for key, _ in self.selector.select():
                worker: Worker | None = key.data
                if worker is None:
                    return wakeup.recv(1)[0]
                report = os.read(worker.reports, 64)
                if report:
                    worker.ready = True
                    log.info("worker %d ready (pid %d)", worker.index, worker.process.pid)
                elif self._replace(worker):
                    continue
                if not announced and all(w.ready for w in self.workers):
                    announced = True
                    announce(f"serving on {self.url} with {self.count} workers", self.settings)
                    for text in self.lines:
                        announce(text, self.settings)

    def _replace(self, worker: Worker) -> bool:
        """`worker` has exited: start another in its place, unless it never got
        ready (it would fail again the same way)."""
        self.selector.unregister(worker.reports)
        os.close(worker.reports)
        status = worker.process.wait()
        _forget_metrics(self.metrics_dir, worker.process.pid)
        if not worker.ready:
            raise Problem(
                f"worker {worker.index} exited with status {status} before it was ready "
                "(its log is above)"
            )
        log.warning(
            "worker %d (pid %d) exited with status %d; starting another",
            worker.index,
            worker.process.pid,
            status,
        )
        self.workers[worker.index] = self._start(worker.index)
        return True

    def _stop_all(self) -> None:
        """SIGTERM to every worker (graceful), then SIGKILL to any still there."""
        running = [w for w in self.workers if w.process.poll() is None]
        for worker in running:
            worker.process.terminate()
        for worker in running:
            try:
                worker.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %ss; killed", worker.index, STOP_SECONDS)
                worker.process.kill()
                worker.process.wait()
        for worker in self.workers:
            if worker.reports in self.selector.get_map():
                self.selector.unregister(worker.reports)
                os.close(worker.reports)


def _forget_metrics(metrics_dir: str, pid: int) -> None:
    """Drop the live gauges of a process that exited (its counters still count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def run_worker(
    socket_fd: int, report_fd: int, lifeline_fd: int, host: str, forwarded_allow_ips: str
) -> None:
    """One worker: serve on the inherited socket until SIGTERM or the parent is gone."""
    settings = Settings.from_env()
    sock = socket.socket(fileno=socket_fd)
    # The parent stops every worker on Ctrl-C: exit by the signal, quietly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    server: Server | None = None

    def started() -> None:
        assert server is not None
        loop = asyncio.get_running_loop()
        loop.add_reader(lifeline_fd, _parent_gone, server, loop, lifeline_fd)
        os.write(report_fd, f"{os.getpid()}\n".encode())

    server = make_server(settings, host, forwarded_allow_ips, started)
    server.run(sockets=[sock])


def _parent_gone(server: Server, loop: asyncio.AbstractEventLoop, fd: int) -> None:
    loop.remove_reader(fd)
    log.warning("the parent process is gone; stopping")
    server.should_exit = True
