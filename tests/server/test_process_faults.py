"""Faults of whole app processes (`citelink serve`): one of two killed with
SIGKILL mid-stream, and a graceful SIGTERM with a request in flight."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from tests.support.data import create_user, subscribe
from tests.support.processes import citelink_serve
from tests.support.waiting import wait_until
from tests.support.wsclient import Follower, losses_and_duplicates, open_socket


async def inbox_ids(conn, user_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM user_notification WHERE user_id = $1 AND NOT is_deleted ORDER BY id",
        user_id,
    )
    return [r["id"] for r in rows]


# Slow (about 25 s): two `citelink serve` processes and 150 publishes.
@pytest.mark.slow
async def test_sigkill_of_one_process_mid_stream(conn, db_url, tmp_path, figure):
    """Publishing goes on through process B while A is killed; A's clients
    reconnect to B and resume; every client ends with every item, once."""
    staff = await create_user(conn, "admin", staff=True)
    users = [await create_user(conn, f"user{i}") for i in range(6)]
    news = None
    for user in users:
        news = await subscribe(conn, user.id, "news")
    published = 150
    async with (
        citelink_serve(db_url, tmp_path / "a") as a,
        citelink_serve(db_url, tmp_path / "b") as b,
        httpx.AsyncClient(base_url=b.server.http, timeout=30) as client,
    ):
        # user0-2 on A (then B), user3-5 on B.
        followers = [
            Follower([a.server, b.server] if i < 3 else [b.server], user.token).start()
            for i, user in enumerate(users)
        ]
        for i in range(published):
            if i == 50:
                a.process.send_signal(signal.SIGKILL)
                await a.process.wait()
            r = await client.post(
                "/api/notifications/", json={"message": f"m{i}", "tag": news}, headers=staff.headers
            )
            assert r.status_code == 201
        lost = duplicated = 0
        for user, follower in zip(users, followers, strict=True):
            expected = await inbox_ids(conn, user.id)
            assert len(expected) == published
            await follower.wait_for(expected, within=10)
            await follower.stop()
            losses, duplicates = losses_and_duplicates(follower.ids, expected)
            lost, duplicated = lost + losses, duplicated + duplicates
            assert sorted(follower.ids) == expected, (
                follower.closes,
                follower.reconnects,
                sorted(set(expected) - set(follower.ids)),
            )
        assert a.process.returncode == -signal.SIGKILL
        moved = sum(f.reconnects > 0 for f in followers[:3])
    assert (lost, duplicated, moved) == (0, 0, 3)
    figure(
        f"SIGKILL of 1 of 2 processes after 50 of {published} publishes: 3 clients moved, "
        f"{len(users) * published} deliveries, {lost} lost, {duplicated} duplicates"
    )


async def test_sigterm_closes_sockets_with_1001_and_finishes_requests_in_flight(
    conn, db_url, tmp_path
):
    staff = await create_user(conn, "admin", staff=True)
    alice = await create_user(conn, "alice")
    news = await subscribe(conn, alice.id, "news")
    async with (
        citelink_serve(db_url, tmp_path) as serve,
        httpx.AsyncClient(base_url=serve.server.http, timeout=30) as client,
        open_socket(serve.server, alice.token) as ws,
    ):
        assert await ws.request("ping") == {"type": "pong"}
        async with conn.transaction():
            # Alice's counter row, locked, holds any fan-out to her in the database.
            await conn.execute(
                "INSERT INTO inbox_count (user_id) VALUES ($1) "
                "ON CONFLICT (user_id) DO UPDATE SET total = inbox_count.total",
                alice.id,
            )
            in_flight = asyncio.create_task(
                client.post(
                    "/api/notifications/",
                    json={"message": "in flight", "tag": news},
                    headers=staff.headers,
                )
            )
            # Until the request waits for the lock inside the database.
            await wait_until(
                lambda: conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
            )
            assert not in_flight.done()
            serve.process.send_signal(signal.SIGTERM)
            assert await ws.close_code(within=10) == 1001
            assert not in_flight.done()
        # The lock is released: the request completes, then the process exits.
        r = await in_flight
        assert r.status_code == 201 and r.json()["recipients"] == 1
        assert await asyncio.wait_for(serve.process.wait(), 15) in (0, -signal.SIGTERM)
    assert await conn.fetchval("SELECT count(*) FROM user_notification") == 1
