"""Shared fixtures: one PostgreSQL per session, a migrated template database,
a fresh clone of it per test, and a real uvicorn server on a free port.

PostgreSQL is the embedded server (started in a temporary directory and
deleted afterwards) unless CITELINK_TEST_DATABASE_URL names a server whose
user may create databases.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest

from citelink.db import embedded
from citelink.db.connection import connect
from citelink.db.migrations import migrate
from citelink.settings import Settings
from tests.support.data import SECRET_KEY, create_user
from tests.support.database import TEMPLATE, pg_ctl, with_database
from tests.support.servers import RunningServer, start_server

_numbers = itertools.count()


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


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, secret_key=SECRET_KEY, data_dir=tmp_path)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain SQL connection to the test database (no actor set)."""
    connection = await connect(db_url)
    yield connection
    await connection.close()


@pytest.fixture
def make_user(conn: asyncpg.Connection):
    """`await make_user("alice", staff=False)`: create_user on the test's database."""
    return functools.partial(create_user, conn)


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
    from tests.support.world import build_world  # here, as api_support imports this module

    return await build_world(conn)


@pytest.fixture
async def chrome():
    """Headless Chromium (tests/browser.py); the test fails if a page raised a
    script error."""
    from playwright.async_api import async_playwright

    from tests.support.browser import ARGS, CHROMIUM, Chrome

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        chrome = Chrome(browser)
        yield chrome
        await browser.close()
    assert chrome.errors == [], "the page raised script errors"


@pytest.fixture
def figure(request: pytest.FixtureRequest):
    """`figure("...")` records a measured figure for the end-of-run summary
    (kept with the test's report, so it reaches the summary from xdist workers)."""

    def record(text: str) -> None:
        request.node.user_properties.append(("figure", text))

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    figures = [
        f"{report.head_line or report.nodeid}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for key, value in report.user_properties
        if key == "figure"
    ]
    if figures:
        terminalreporter.section("figures")
        for line in figures:
            terminalreporter.write_line(line)
