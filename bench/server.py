"""The server under test and its data: start `citelink serve`, seed by SQL."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg

from citelink.db.connection import connect
from citelink.db.embedded import stop as stop_embedded
from citelink.identity import passwords, tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time of a live process so far, all its threads, to the nanosecond
    (schedstat; /proc/PID/stat counts in ticks of 10 ms). 0 once it is gone."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError):
        pass  # exited meanwhile
    return total / 1e9


class Server:
    """`citelink serve` in a process of its own (or a parent and its workers),
    on a fresh embedded database (or on `database_url` when given), removed
    by `close()`. `src`: another checkout's source tree to serve (an older
    commit, for before-and-after figures), put first on PYTHONPATH; `env`:
    settings of the run (CITELINK_*)."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        src: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.tmp = tempfile.mkdtemp(prefix="citelink-bench-")
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.secret_key = secrets.token_hex(32)
        self.env = {
            **os.environ,
            "CITELINK_DATA_DIR": self.tmp,
            "CITELINK_SECRET_KEY": self.secret_key,
            # Benchmarks open many sockets per user and send frames quickly,
            # and sign in from one address as fast as the server lets them.
            "CITELINK_WS_MAX_SOCKETS_PER_USER": "1000",
            "CITELINK_WS_FRAMES_PER_SECOND": "100000",
            "CITELINK_LOGIN_ATTEMPTS_PER_CLIENT": "0",
            **(env or {}),
        }
        if src is not None:
            self.env["PYTHONPATH"] = str(src)
        if database_url:
            self.env["CITELINK_DATABASE_URL"] = database_url
        self.database_url = subprocess.run(
            [sys.executable, "-m", "citelink.cli", "db-url"],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.proc: subprocess.Popen | None = None

    def start(self, workers: int = 1) -> None:
        with open(Path(self.tmp) / "server.log", "a") as server_log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "citelink.cli",
                    "serve",
                    *("--port", str(self.port)),
                    # Older versions serve one process and know no --workers.
                    *(("--workers", str(workers)) if workers != 1 else ()),
                ],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=server_log,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.http}/readyz", timeout=5):
                    return
            except OSError:  # refused while starting, or 503 until ready
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                log = (Path(self.tmp) / "server.log").read_text()[-2000:]
                raise RuntimeError(f"server did not start; its log ends:\n{log}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server process and its workers, if any."""
        assert self.proc
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [self.proc.pid, *map(int, children.split())]

    def rss_kib(self) -> int:
        """Resident memory of the server process and its workers."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process and its workers so far."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def postgres_cpu_seconds(self) -> float:
        """CPU time of the embedded PostgreSQL (postmaster and its live children)."""
        pidfile = Path(self.tmp) / "pgdata" / "postmaster.pid"
        if not pidfile.exists():
            return float("nan")  # an external server: not measured
        postmaster = int(pidfile.read_text().split()[0])
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if int(stat.parent.name) == postmaster or parent == postmaster:
                total += cpu_seconds(int(stat.parent.name))
        return total

    def stop(self) -> None:
        """Stop `citelink serve` (the database stays)."""
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def close(self) -> None:
        """Stop the server, and the embedded database with its files."""
        self.stop()
        if "CITELINK_DATABASE_URL" not in self.env:
            stop_embedded(Path(self.tmp))
        shutil.rmtree(self.tmp, ignore_errors=True)

    def token(self, user_id: int, *, staff: bool = False) -> str:
        """An access token, as signing in gives (a staff user's says so)."""
        return tokens.issue(self.secret_key, user_id, "access", 24 * 60, staff=staff)


class Seed:
    """Bulk data by plain SQL: users, tags, subscriptions, history."""

    def __init__(self, conn: asyncpg.Connection, url: str):
        self.conn, self.url = conn, url

    @classmethod
    async def connect(cls, url: str) -> Seed:
        return cls(await connect(url), url)

    async def another_connection(self) -> asyncpg.Connection:
        """One more plain SQL connection (for a transaction of a scenario's own)."""
        return await connect(self.url)

    async def users(self, prefix: str, count: int, password: str = "bench-pw") -> list[int]:
        hashed = passwords.hash_password(password)
        rows = await self.conn.fetch(
            "INSERT INTO users (username, password_hash, is_staff) "
            "SELECT $1 || g, $2, g = 1 FROM generate_series(1, $3) g RETURNING id",
            prefix,
            hashed,
            count,
        )
        return [r["id"] for r in rows]

    async def tag(self, name: str, user_ids: list[int]) -> int:
        tag_id = await self.conn.fetchval("INSERT INTO tag (name) VALUES ($1) RETURNING id", name)
        await self.conn.execute(
            "INSERT INTO subscription (user_id, tag_id) SELECT unnest($1::bigint[]), $2",
            user_ids,
            tag_id,
        )
        return tag_id

    async def history(
        self, tag_ids: list[int], start: int, count: int, data: dict | None = None
    ) -> None:
        """Notifications `start` .. `start + count - 1`, round robin over `tag_ids`,
        `data` {"n": number % 10} (or `data` for all); 100,000 per statement
        (each fans out)."""
        done = 0
        while done < count:
            batch = min(100_000, count - done)
            await self.conn.execute(
                "INSERT INTO notification (tag_id, message, data) "
                "SELECT ($1::bigint[])[1 + g % cardinality($1::bigint[])], 'history ' || g, "
                "coalesce($4::jsonb, jsonb_build_object('n', g % 10)) "
                "FROM generate_series($2::int, $3::int) g",
                tag_ids,
                start + done,
                start + done + batch - 1,
                data,
            )
            done += batch

    async def close(self) -> None:
        await self.conn.close()
