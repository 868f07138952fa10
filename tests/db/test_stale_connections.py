"""Pooled connections the server dropped (a restart, a failover,
pg_terminate_backend) are replaced, not surfaced as 503s: a connection found
dead before its statement is sent is swapped for a fresh one, and a read
whose connection dies under it is run again. A write that may have reached
the server is not: 503, and it is not published twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import httpx
import pytest

from citelink.db.connection import connect
from tests.support.proxy import FreezableProxy
from tests.support.waiting import wait_until
from tests.support.world import World
from tests.support.wsclient import serving

APP_BACKENDS = (
    "FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)
# Each termination waits (up to 5 s) for the server process to exit, or not.
TERMINATE_APP = f"SELECT count(pg_terminate_backend(pid, 5000)) {APP_BACKENDS}"
TERMINATE_APP_AT_ONCE = f"SELECT count(pg_terminate_backend(pid)) {APP_BACKENDS}"


# Slow (about 14 s): three rounds of 20 requests; the tests below cover one death each.
@pytest.mark.slow
async def test_after_every_app_connection_is_terminated_requests_succeed(
    settings, world: World, conn, db_url, figure
):
    """Three rounds: warm the pool up (10 connections), terminate every
    connection of the app and wait for their server processes to exit, then
    20 requests in a row: publishes and lists. Through a proxy that passes the
    servers' closes on 1 s late: the app has read each one's goodbye (an
    error) but not yet the end of its connection, as happens for a moment
    after every termination. (Before: the first request on each such
    connection answered 503.)"""
    staff = world.staff.headers
    statuses: Counter = Counter()
    published: list[str] = []
    proxy = FreezableProxy(db_url)
    proxy.close_delay = 1.0
    proxied = await proxy.start()
    try:
        async with (
            serving(settings, database_url=proxied, pool_size=10) as server,
            httpx.AsyncClient(base_url=server.http, timeout=30) as client,
        ):
            for round_ in range(3):
                await asyncio.gather(
                    *(client.get("/api/notifications/", headers=staff) for _ in range(20))
                )
                assert await conn.fetchval(TERMINATE_APP) >= 3  # the listener and pooled ones
                for n in range(20):
                    if n % 2 == 0:
                        message = f"round {round_} publish {n}"
                        r = await client.post(
                            "/api/notifications/",
                            json={"message": message, "tag": world.news},
                            headers=staff,
                        )
                        if r.status_code == 201:
                            published.append(message)
                    elif n % 4 == 1:
                        r = await client.get("/api/notifications/", headers=staff)
                    else:
                        r = await client.get("/api/inbox/", headers=world.alice.headers)
                    statuses[r.status_code] += 1
                await asyncio.sleep(1)
    finally:
        await proxy.stop()
    stored = [r["message"] for r in await conn.fetch("SELECT message FROM notification")]
    figure(f"3 rounds of 20 requests after every app connection was terminated: {dict(statuses)}")
    assert statuses == {201: 30, 200: 30}
    assert sorted(m for m in stored if m.startswith("round ")) == sorted(published)


@pytest.fixture
async def locker(db_url):
    """A connection that holds a lock on `notification`, and one that watches."""
    holder = await connect(db_url)
    watcher = await connect(db_url)
    yield holder, watcher
    await holder.close()
    await watcher.close()


# The statement of GET /api/notifications/ (queries/api.sql, notifications_page).
LIST = "delivered_at, delivery_attempts, delivery_error, retry_at, expires_at, expired_at"


async def blocked_backend(watcher: asyncpg.Connection, besides: set[int], statement: str) -> int:
    """The pid of a server process (other than `besides`) whose statement
    containing `statement` waits on a lock. (The app's scheduler may be
    waiting on the same lock.)"""

    async def waiting() -> set[int]:
        rows = await watcher.fetch(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND strpos(query, $1) > 0",
            statement,
        )
        return {r["pid"] for r in rows} - besides

    return (await wait_until(waiting)).pop()


async def test_a_read_whose_connection_dies_under_it_is_run_again(settings, world: World, locker):
    """The read's statement is held by a lock, and its server process is
    terminated while it waits: the read is run again on another connection."""
    holder, watcher = locker
    async with (
        serving(settings) as server,
        httpx.AsyncClient(base_url=server.http, timeout=30) as client,
    ):
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE notification IN ACCESS EXCLUSIVE MODE")
        read = asyncio.create_task(client.get("/api/notifications/", headers=world.staff.headers))
        first = await blocked_backend(watcher, set(), LIST)
        await watcher.execute("SELECT pg_terminate_backend($1)", first)
        # Run again, it waits for the lock too; then the lock goes.
        await blocked_backend(watcher, {first}, LIST)
        await transaction.rollback()
        r = await read
        assert r.status_code == 200
        assert [n["message"] for n in r.json()["results"]] == ["for-alice-only", "hello everyone"]


async def test_a_write_whose_connection_dies_under_it_is_not_repeated(
    settings, world: World, conn, locker
):
    """A publish whose server process is terminated while its statement waits
    may have committed, for all the app knows: 503, and no second attempt."""
    holder, watcher = locker
    async with (
        serving(settings) as server,
        httpx.AsyncClient(base_url=server.http, timeout=30) as client,
    ):
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE notification IN ACCESS EXCLUSIVE MODE")
        write = asyncio.create_task(
            client.post(
                "/api/notifications/",
                json={"message": "once", "tag": world.news},
                headers=world.staff.headers,
            )
        )
        first = await blocked_backend(watcher, set(), "citelink_publish(")
        await watcher.execute("SELECT pg_terminate_backend($1)", first)
        r = await write
        await transaction.rollback()
        assert (r.status_code, r.json()) == (
            503,
            {"detail": "database unavailable, try again later"},
        )
        await asyncio.sleep(0.2)
        assert await conn.fetchval("SELECT count(*) FROM notification WHERE message = 'once'") == 0


@pytest.mark.slow
async def test_requests_at_once_after_terminations(settings, world: World, conn, figure):
    """Thirty times: every connection of the app terminated, and at once (not
    waiting for the server processes to exit) a publish, then a list. Reads
    never fail; a publish may only fail if its statement reached a server
    process in the instant it was dying (it may have run: 503, not repeated).
    (Before: the first publish after a termination answered 503 in half the
    rounds.)"""
    staff = world.staff.headers
    statuses: Counter = Counter()
    async with (
        serving(settings, pool_size=10) as server,
        httpx.AsyncClient(base_url=server.http, timeout=30) as client,
    ):
        for round_ in range(30):
            await asyncio.gather(
                *(client.get("/api/notifications/", headers=staff) for _ in range(20))
            )
            await conn.execute(TERMINATE_APP_AT_ONCE)
            r = await client.post(
                "/api/notifications/",
                json={"message": f"at once {round_}", "tag": world.news},
                headers=staff,
            )
            statuses["publish", r.status_code] += 1
            r = await client.get("/api/notifications/", headers=staff)
            statuses["list", r.status_code] += 1
            await asyncio.sleep(0.2)
    stored = await conn.fetchval("SELECT count(*) FROM notification WHERE message LIKE 'at once %'")
    figure(
        "30 rounds, a publish and a list at once after terminating every app connection: "
        f"{dict(statuses)}"
    )
    assert statuses["list", 200] == 30
    assert statuses["publish", 201] >= 28 and stored == statuses["publish", 201]
