"""`citelink serve --workers N`: N processes serving one port, and each of them.

The port is shared with SO_REUSEPORT, one listening socket per worker, so the
kernel spreads new connections evenly (one socket shared by all would let the
worker that wakes first take most of a burst). Each worker is a process of
its own (`python -m citelink.server.workers`, started by `serve`, never by hand) with
its pool and its LISTEN connection, so every socket on any worker gets every
event. It inherits its listening socket, a pipe to report on and one that
tells it the parent is alive, and reads its settings (the database URL and
secret key resolved by the parent) from the environment.

`serve`'s own process watches them (`Workers`): it announces the port once
all are ready, replaces a worker that dies after it was ready, stops
everything if one fails to start, and on SIGTERM or Ctrl-C stops them all
gracefully (each closes its sockets with 1001 and finishes the requests in
flight). A worker whose parent vanishes stops by itself; the parent's
metrics directory (PROMETHEUS_MULTIPROC_DIR, in the temporary folder) is then
left behind, as nobody remains to remove it.
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import dataclass

from citelink.problems import Problem
from citelink.server.logs import log_config
from citelink.server.uvicorn_server import (
    GRACEFUL_SECONDS,
    Server,
    announce,
    bind,
    make_server,
    url_of,
)
from citelink.settings import Settings

log = logging.getLogger("citelink.serve")

# A worker gets a little longer than uvicorn's graceful shutdown to exit after
# SIGTERM before it is killed.
STOP_SECONDS = GRACEFUL_SECONDS + 5


@dataclass
class Worker:
    """One worker process and the pipe it reports on: its pid once started,
    then end of file when it exits."""

    index: int
    process: subprocess.Popen[bytes]
    reports: int
    ready: bool = False


class Workers:
    """N `citelink.server.workers` processes serving one port, watched from here."""

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
                "citelink.server.workers",
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
                if not os.read(worker.reports, 64):  # the end of the pipe: it exited
                    self._replace(worker)
                    continue
                worker.ready = True
                log.info("worker %d ready (pid %d)", worker.index, worker.process.pid)
                if not announced and all(w.ready for w in self.workers):
                    announced = True
                    announce(f"serving on {self.url} with {self.count} workers", self.settings)
                    for text in self.lines:
                        announce(text, self.settings)

    def _replace(self, worker: Worker) -> None:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m citelink.server.workers", description=__doc__)
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--forwarded-allow-ips", required=True)
    args = parser.parse_args(argv)
    run_worker(
        args.socket_fd, args.report_fd, args.lifeline_fd, args.host, args.forwarded_allow_ips
    )


if __name__ == "__main__":
    main()
