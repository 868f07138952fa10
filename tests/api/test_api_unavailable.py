"""The REST API when the database is down or stops answering: a 503 with a JSON
`detail` within a bounded time, never a 500 and never a hang; and back to
normal by itself once the database is."""

from __future__ import annotations

import time

import httpx

from tests.support.proxy import FreezableProxy
from tests.support.world import World
from tests.support.wsclient import serving


async def calls(client: httpx.AsyncClient, world: World) -> list[tuple[str, httpx.Response, float]]:
    """A write, a read and a sign-in; each with how long it took."""
    answers = []
    for label, method, path, kwargs in (
        ("publish", "POST", "/api/notifications/", {"json": {"message": "m", "tag": world.news}}),
        ("inbox", "GET", "/api/inbox/", {}),
        ("sign in", "POST", "/api/token/", {"json": {"username": "alice", "password": "x"}}),
    ):
        headers = world.staff.headers if label != "sign in" else {}
        started = time.monotonic()
        r = await client.request(method, path, headers=headers, **kwargs)
        answers.append((label, r, time.monotonic() - started))
    return answers


def assert_unavailable(answers: list[tuple[str, httpx.Response, float]], bound: float) -> None:
    wrong = [
        f"{label}: {r.status_code} {r.text[:200]} after {took:.2f}s"
        for label, r, took in answers
        if r.status_code != 503
        or r.json() != {"detail": "database unavailable, try again later"}
        or r.headers.get("retry-after") != "1"
        or took > bound
    ]
    assert wrong == []


async def test_database_gone_is_a_503_at_once_and_the_app_recovers(settings, db_url, world):
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    try:
        async with (
            serving(settings, database_url=proxied) as server,
            httpx.AsyncClient(base_url=server.http, timeout=30) as client,
        ):
            r = await client.post(
                "/api/notifications/",
                json={"message": "up", "tag": world.news},
                headers=world.staff.headers,
            )
            assert r.status_code == 201
            proxy.cut()  # every connection closed, and each new one
            assert_unavailable(await calls(client, world), bound=2)
            # The database is reachable again: so is the API, without a restart.
            proxy.restore()
            r = await client.post(
                "/api/notifications/",
                json={"message": "back", "tag": world.news},
                headers=world.staff.headers,
            )
            assert r.status_code == 201
    finally:
        await proxy.stop()


async def test_a_frozen_database_link_is_a_503_within_the_bound(settings, db_url, world):
    """Packets stop flowing (no error, no close): statement and pool waits are
    bounded by db_query_seconds and db_connect_seconds."""
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    try:
        async with (
            serving(
                settings, database_url=proxied, db_connect_seconds=0.5, db_query_seconds=0.5
            ) as server,
            httpx.AsyncClient(base_url=server.http, timeout=30) as client,
        ):
            proxy.freeze()
            # A statement times out (0.5 s), its connection is cancelled (up to
            # 0.5 s more); the next calls wait for a connection at most 0.5 s.
            assert_unavailable(await calls(client, world), bound=2)
            proxy.thaw()
            r = await client.get("/api/inbox/counts/", headers=world.alice.headers)
            assert r.status_code == 200
    finally:
        await proxy.stop()
