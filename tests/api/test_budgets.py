"""A budget per user (citelink.db.budget): one user's database work is bounded
in concurrency, time and input, so nothing one user does takes the service
from the others. Each attack below is one user's; another user is measured
while it runs."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import httpx
import orjson
import pytest

from tests.support.attack import ATTACKER, Bystander, peak_rss_mib, rss_mib
from tests.support.data import publish_many
from tests.support.processes import citelink_serve
from tests.support.waiting import wait_until
from tests.support.world import World
from tests.support.wsclient import open_socket, serving

# {"actions": [{} x 300,000, {"id": "x"}]}: 879 KiB that made one page take a minute.
HOSTILE = {"actions": [{}] * 300_000 + [{"id": "x"}]}


async def test_a_hostile_data_filter_is_refused_naming_the_limit(world: World, client, server):
    """REST query, REST body and socket frame alike; the refusal is at once."""
    headers = world.alice.headers
    big = orjson.dumps({"actions": [{}] * 17}).decode()
    r = await client.get("/api/inbox/", params={"data": big}, headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"]["data"] == "a data filter has at most 16 values in an array"
    deep = orjson.dumps({"a": {"b": {"c": {"d": {"e": 1}}}}}).decode()
    r = await client.get("/api/inbox/counts/", params={"data": deep}, headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"]["data"] == "nested deeper than 4 levels"
    started = time.monotonic()
    r = await client.post(
        "/api/inbox/bulk/",
        json={"action": "read", "filter": {"data": HOSTILE}},
        headers=headers,
    )
    assert (r.status_code, r.json()) == (413, {"detail": "request body larger than 65536 bytes"})
    assert time.monotonic() - started < 2
    r = await client.post(
        "/api/inbox/bulk/",
        json={"action": "read", "filter": {"data": {"k": "x" * 2000}}},
        headers=headers,
    )
    assert r.status_code == 422, r.text
    assert "a data filter is at most 1024 bytes" in r.json()["errors"]["filter"]
    async with open_socket(server, world.alice.token) as ws:
        answer = await ws.request("read_all", data={"k": "x" * 2000})
        assert answer == {
            "type": "error",
            "code": "invalid",
            "detail": "'data' a data filter is at most 1024 bytes of JSON",
        }
        assert (await ws.request("ping"))["type"] == "pong"


async def test_past_its_budget_a_user_waits_then_gets_429_and_others_go_on(
    world: World, settings, conn
):
    """Alice's counter row held by another transaction: her writes wait for it,
    each holding a slot of her budget. Past the budget her requests wait a
    second, then answer 429 (her socket frames `rate_limited`); Bob's requests
    and a publish go through meanwhile, and her held writes finish once the
    row is free."""
    async with (
        serving(settings, user_concurrency=2) as server,
        httpx.AsyncClient(base_url=server.http, timeout=30) as http,
        open_socket(server, world.alice.token) as alice_ws,
    ):
        holder = await asyncpg.connect(settings.database_url)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(
                "SELECT FROM inbox_count WHERE user_id = $1 FOR UPDATE", world.alice.id
            )
            path = f"/api/inbox/{world.alice_item}/"
            held = [
                asyncio.create_task(
                    http.patch(path, json={"is_read": True}, headers=world.alice.headers)
                )
                for _ in range(2)
            ]
            await wait_until(lambda: _waiting_on_lock(conn, world.alice.id))
            started = time.monotonic()
            refused = await http.get("/api/inbox/counts/", headers=world.alice.headers)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            assert 0.9 < time.monotonic() - started < 5
            frame = await alice_ws.request("counts")
            assert (frame["type"], frame["code"]) == ("error", "rate_limited")
            # Bob, and a publisher, are not held up.
            started = time.monotonic()
            bob = await http.get("/api/inbox/counts/", headers=world.bob.headers)
            posted = await http.post(
                "/api/notifications/",
                json={"message": "still on", "tag": world.extra},
                headers=world.staff.headers,
            )
            assert (bob.status_code, posted.status_code) == (200, 201)
            assert time.monotonic() - started < 1
            await tx.rollback()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        finally:
            await holder.close()
        r = await http.get("/api/inbox/counts/", headers=world.alice.headers)
        assert r.status_code == 200


async def _waiting_on_lock(conn: asyncpg.Connection, user_id: int) -> bool:
    """Two of the user's writes are waiting for a row lock."""
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE '%citelink_lock_inbox%'"
    )
    return waiting >= 2


async def test_concurrent_bulk_calls_of_one_user_wait_for_each_other(
    world: World, conn, client, figure
):
    """Four bulk read/unread calls at once on a 5,000-item inbox: each waits
    for the one before (the user's counter row), none fails, and the counters
    add up (there were 14 deadlocks and 7 answers of 500 in 24 before)."""
    await publish_many(conn, world.private, 5000)
    started = time.monotonic()
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/inbox/bulk/",
                json={"action": "read" if k % 2 else "unread"},
                headers=world.alice.headers,
            )
            for k in range(4)
        )
    )
    took = time.monotonic() - started
    assert [r.status_code for r in answers] == [200] * 4
    unread = await conn.fetchval(
        "SELECT unread FROM inbox_count WHERE user_id = $1", world.alice.id
    )
    recount = await conn.fetchval(
        "SELECT count(*) FROM user_notification WHERE user_id = $1 AND NOT is_read",
        world.alice.id,
    )
    assert unread == recount
    figure(f"4 bulk calls at once on 5,002 items: all 200 in {took:.2f} s")


async def test_bulk_changes_are_audited_in_bounded_space(world: World, conn, client):
    """Past the item limit, one audit row per user and kind of change, with how
    many items and the first and last id; below it, one row per item."""
    await publish_many(conn, world.private, 1500)
    before = await conn.fetchval("SELECT count(*) FROM audit_log")
    r = await client.post("/api/inbox/read-all/", headers=world.alice.headers)
    assert r.json() == {"updated": 1502}
    rows = await conn.fetch("SELECT * FROM audit_log WHERE id > $1 ORDER BY id", before)
    assert 1 <= len(rows) <= 3
    assert {(row["resource"], row["object_id"], row["actor_id"]) for row in rows} == {
        ("inbox", world.alice.id, world.alice.id)
    }
    assert sum(row["changes"]["items"] for row in rows) == 1502
    assert all(row["changes"]["is_read"] == [False, True] for row in rows)
    item = await conn.fetchval(
        "SELECT id FROM user_notification WHERE user_id = $1 LIMIT 1", world.bob.id
    )
    await client.patch(f"/api/inbox/{item}/", json={"is_read": True}, headers=world.bob.headers)
    last = await conn.fetchrow("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1")
    assert (last["resource"], last["object_id"]) == ("user_notification", item)


async def test_a_filtered_listing_looks_at_a_window_and_goes_on(world: World, conn, settings):
    """A tag filter that matches only alice's oldest items: each page looks at
    no more than the window, answers what it found with a `next` below it,
    and the pages together list every match once."""
    await publish_many(conn, world.news, 30)
    async with (
        serving(settings, filter_window=10) as server,
        httpx.AsyncClient(base_url=server.http, timeout=30) as http,
    ):
        found, before, pages = [], None, 0
        while True:
            params = {"tag": world.private, "limit": 5}
            if before is not None:
                params["before"] = before
            r = await http.get("/api/inbox/", params=params, headers=world.alice.headers)
            assert r.status_code == 200
            body = r.json()
            assert len(body["results"]) <= 5
            found += [item["id"] for item in body["results"]]
            pages += 1
            before = body["next"]
            if before is None:
                break
    assert found == [world.alice_item]
    assert pages == 4  # 32 items, a window of 10 each


@pytest.mark.slow
async def test_hostile_filters_from_many_connections_leave_others_on_time(
    world: World, conn, server, figure
):
    """One ordinary user, 20 connections, each listing her 20,000-item inbox
    with the costliest data filter the bounds allow, for 8 s: another user's
    requests all answer 200 within 500 ms (p99), and a push still arrives."""
    await publish_many(conn, world.private, 20_000)
    worst = {f"k{k}": [{"id": "x", "n": list(range(15))}] for k in range(10)}
    query = {"data": orjson.dumps(worst).decode(), "limit": 100}
    bystander = await Bystander.start(server.http, world.bob.headers)
    statuses: dict[int, int] = {}
    stop = time.monotonic() + 8

    async def attack() -> None:
        transport = httpx.AsyncHTTPTransport(local_address=ATTACKER)
        async with httpx.AsyncClient(base_url=server.http, transport=transport, timeout=60) as http:
            while time.monotonic() < stop:
                r = await http.get("/api/inbox/", params=query, headers=world.alice.headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with open_socket(server, world.bob.token) as bob_ws:
        await asyncio.gather(*(attack() for _ in range(20)))
        await conn.execute(
            "INSERT INTO notification (tag_id, message) VALUES ($1, 'on time')", world.news
        )
        await bob_ws.until_message("on time", within=2)
    await bystander.stop()
    assert set(bystander.statuses) == {200} and not bystander.failures
    assert bystander.p99_ms() <= 500, bystander.summary()
    assert set(statuses) <= {200, 429}
    figure(f"attacker answers {statuses}; {bystander.summary()}")


@pytest.mark.slow
async def test_a_flood_of_hostile_bodies_is_refused_before_it_is_parsed(
    world: World, db_url, tmp_path, figure
):
    """Thirty bulk requests at a time from one ordinary user for 3 s, each an 879 KiB
    body of the costliest shape (it made the server grow from 120 to 524
    MiB): a user's body is 64 KiB at most (413 before any parsing, which
    holds the event loop) and is read in the user's slots, a few at a time;
    the server stays small, and another user's requests are answered on time."""
    body = orjson.dumps({"action": "read", "filter": {"data": HOSTILE}})
    async with citelink_serve(db_url, tmp_path, user_concurrency="2") as serve:
        pid = serve.process.pid
        idle = rss_mib(pid)
        bystander = await Bystander.start(serve.server.http, world.bob.headers)
        transport = httpx.AsyncHTTPTransport(local_address=ATTACKER)
        headers = {**world.alice.headers, "Content-Type": "application/json"}
        answers: list[httpx.Response] = []
        stop = time.monotonic() + 3
        async with httpx.AsyncClient(
            base_url=serve.server.http, transport=transport, timeout=60
        ) as http:
            while time.monotonic() < stop:
                answers += await asyncio.gather(
                    *(
                        http.post("/api/inbox/bulk/", content=body, headers=headers)
                        for _ in range(30)
                    )
                )
        await bystander.stop()
        peak = peak_rss_mib(pid)
    statuses = Counter(r.status_code for r in answers)
    figure(
        f"hostile bodies 30 at a time for 3 s: answers {dict(statuses)}; server RSS idle "
        f"{idle:.0f} MiB, "
        f"peak {peak:.0f} MiB; {bystander.summary()}"
    )
    assert set(statuses) <= {413, 429}
    assert peak - idle < 150
    assert set(bystander.statuses) == {200} and bystander.p99_ms() <= 500
