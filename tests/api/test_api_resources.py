"""What each resource does: inbox paging and state, tags, subscriptions,
publishing, users, the audit trail, body limits and trailing slashes."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx

from tests.support.data import Partial, publish_many
from tests.support.servers import start_server
from tests.support.world import ITEM_KEYS, World


async def test_inbox_pages_with_a_cursor_and_filters(client: httpx.AsyncClient, world: World, conn):
    await publish_many(conn, world.news, 4)  # alice: 6 items, 1 of them on "private"
    alice = world.alice.headers

    seen, before = [], None
    while True:
        params = {"limit": 4} | ({"before": before} if before else {})
        page = (await client.get("/api/inbox/", params=params, headers=alice)).json()
        assert len(page["results"]) <= 4
        seen += page["results"]
        before = page["next"]
        if before is None:
            break
    ids = [i["id"] for i in seen]
    assert len(ids) == 6 and ids == sorted(ids, reverse=True)
    assert all(set(i) == ITEM_KEYS for i in seen)
    assert seen[-1]["message"] == "hello everyone" and seen[-1]["tag_name"] == "news"

    # An exact multiple of the limit: the last full page says there is no more.
    page = (await client.get("/api/inbox/", params={"limit": 6}, headers=alice)).json()
    assert (len(page["results"]), page["next"]) == (6, None)

    await client.patch(f"/api/inbox/{ids[0]}/", json={"is_read": True}, headers=alice)
    unread = (await client.get("/api/inbox/?status=unread", headers=alice)).json()["results"]
    read = (await client.get("/api/inbox/?status=read", headers=alice)).json()["results"]
    assert [i["id"] for i in read] == [ids[0]] and ids[0] not in {i["id"] for i in unread}
    assert len(unread) == 5
    private = (await client.get(f"/api/inbox/?tag={world.private}", headers=alice)).json()
    assert [i["id"] for i in private["results"]] == [world.alice_item]


async def test_read_unread_and_soft_delete(client: httpx.AsyncClient, world: World, conn):
    alice, item = world.alice.headers, f"/api/inbox/{world.alice_item}/"

    r = await client.patch(item, json={"is_read": True}, headers=alice)
    assert r.status_code == 200 and r.json()["is_read"] is True and r.json()["read_at"]
    counts = (await client.get("/api/inbox/counts/", headers=alice)).json()
    assert counts == Partial(unread=1, total=2)
    r = await client.patch(item, json={"is_read": False}, headers=alice)
    assert (r.json()["is_read"], r.json()["read_at"]) == (False, None)

    r = await client.delete(item, headers=alice)
    assert (r.status_code, r.content) == (204, b"")
    row = await conn.fetchrow(
        "SELECT is_deleted, deleted_at FROM user_notification WHERE id = $1", world.alice_item
    )
    assert row["is_deleted"] and row["deleted_at"]  # the row stays
    for method, body in (("GET", None), ("PATCH", {"is_read": True}), ("DELETE", None)):
        r = await client.request(method, item, json=body, headers=alice)
        assert r.status_code == 404
    counts = (await client.get("/api/inbox/counts/", headers=alice)).json()
    assert counts == Partial(unread=1, total=1)


async def test_read_all_optionally_by_tag(client: httpx.AsyncClient, world: World, conn):
    await publish_many(conn, world.news, 2)
    alice = world.alice.headers
    r = await client.post(f"/api/inbox/read-all/?tag={world.private}", headers=alice)
    assert r.json() == {"updated": 1}
    assert (await client.post("/api/inbox/read-all/", headers=alice)).json() == {"updated": 3}
    assert (await client.post("/api/inbox/read-all/", headers=alice)).json() == {"updated": 0}
    counts = (await client.get("/api/inbox/counts/", headers=alice)).json()
    assert counts == Partial(unread=0, total=4)


async def test_tags(client: httpx.AsyncClient, world: World):
    staff = world.staff.headers
    created = (await client.post("/api/tags/", json={"name": "Sports"}, headers=staff)).json()
    assert set(created) == {"id", "name", "critical"}
    url = f"/api/tags/{created['id']}/"
    assert (await client.get(url, headers=world.bob.headers)).json() == created
    r = await client.patch(url, json={"name": "sports"}, headers=staff)
    assert r.json() == {"id": created["id"], "name": "sports", "critical": False}

    names = []
    page = {"next": None}
    while True:
        params = {"limit": 2} | ({"before": page["next"]} if page["next"] else {})
        page = (await client.get("/api/tags/", params=params, headers=staff)).json()
        names += [t["name"] for t in page["results"]]
        if page["next"] is None:
            break
    assert names == ["sports", "extra", "spare", "private", "news"]

    # A tag with notifications stays (inboxes keep their history); others go,
    # their subscriptions with them.
    r = await client.delete(f"/api/tags/{world.news}/", headers=staff)
    assert r.status_code == 409 and "notifications" in r.json()["detail"]
    await client.post("/api/subscriptions/", json={"tag": created["id"]}, headers=world.bob.headers)
    assert (await client.delete(url, headers=staff)).status_code == 204
    assert (await client.get(url, headers=staff)).status_code == 404
    subs = (await client.get("/api/subscriptions/", headers=world.bob.headers)).json()
    assert [s["tag"] for s in subs["results"]] == [world.news]


async def test_subscriptions(client: httpx.AsyncClient, world: World):
    bob = world.bob.headers
    r = await client.post("/api/subscriptions/", json={"tag": world.extra}, headers=bob)
    assert r.status_code == 201
    mine = r.json()
    assert mine == {"id": mine["id"], "user": world.bob.id, "tag": world.extra, "mode": "live"}
    r = await client.post(
        "/api/subscriptions/", json={"user": world.bob.id, "tag": world.extra}, headers=bob
    )
    assert r.status_code == 409
    listed = (await client.get(f"/api/subscriptions/?tag={world.extra}", headers=bob)).json()
    assert listed == {"results": [mine], "next": None}

    # The owner and staff may unsubscribe; anyone else finds nothing.
    other = f"/api/subscriptions/{world.alice_sub}/"
    assert (await client.delete(other, headers=bob)).status_code == 404
    assert (
        await client.delete(f"/api/subscriptions/{mine['id']}/", headers=bob)
    ).status_code == 204
    assert (await client.delete(other, headers=world.staff.headers)).status_code == 204
    assert (await client.delete(other, headers=world.staff.headers)).status_code == 404


async def test_subscription_limit(settings, world: World):
    running = await start_server(dataclasses.replace(settings, max_subscriptions_per_user=2))
    try:
        async with httpx.AsyncClient(base_url=running.http) as client:
            bob = world.bob.headers  # holds one already
            statuses = []
            for tag in (world.extra, world.spare):
                r = await client.post("/api/subscriptions/", json={"tag": tag}, headers=bob)
                statuses.append(r.status_code)
            assert statuses == [201, 409]
            assert "at most 2" in r.json()["detail"]
    finally:
        await running.stop()


async def test_publish_keeps_long_messages_and_data_intact(client: httpx.AsyncClient, world: World):
    message = "é" * 99_999 + "\U0001f600"  # 100,000 characters
    data = {
        "nested": [[[[{"deep": True}]]]] * 3,
        "big": 2**64 - 1,
        "negative": -(2**63),
        "float": 0.1,
        "text": "日本語 \u2028 ok",
        "empty": {},
    }
    r = await client.post(
        "/api/notifications/",
        json={"message": message, "tag": world.news, "data": data},
        headers=world.staff.headers,
    )
    assert r.status_code == 201
    note = r.json()
    assert (note["message"], note["data"], note["recipients"]) == (message, data, 2)

    item = (await client.get("/api/inbox/?limit=1", headers=world.bob.headers)).json()
    (got,) = item["results"]
    assert (got["notification_id"], got["message"], got["data"]) == (note["id"], message, data)
    again = await client.get(f"/api/notifications/{note['id']}/", headers=world.staff.headers)
    assert again.json() == note

    # A tag nobody follows: published, no recipients; listed by tag.
    r = await client.post(
        "/api/notifications/",
        json={"message": "anyone?", "tag": world.spare},
        headers=world.staff.headers,
    )
    assert (r.json()["recipients"], r.json()["data"]) == (0, {})
    listed = await client.get(f"/api/notifications/?tag={world.spare}", headers=world.staff.headers)
    assert [n["message"] for n in listed.json()["results"]] == ["anyone?"]


async def test_nesting_of_data_is_limited(client: httpx.AsyncClient, world: World):
    # data itself is level 1; orjson could not write back beyond 254 levels.
    for depth, status in ((100, 201), (101, 422), (254, 422), (2000, 400)):
        nested = b"[" * (depth - 1) + b"]" * (depth - 1)
        raw = b'{"message": "m", "tag": %d, "data": {"a": %s}}' % (world.news, nested)
        r = await client.post("/api/notifications/", content=raw, headers=world.staff.headers)
        assert r.status_code == status, r.text


async def test_users(client: httpx.AsyncClient, world: World):
    staff = world.staff.headers
    r = await client.post(
        "/api/users/", json={"username": "carol", "password": "pw-of-carol"}, headers=staff
    )
    assert r.status_code == 201
    carol = r.json()
    assert {k: carol[k] for k in ("username", "is_staff", "is_active")} == {
        "username": "carol",
        "is_staff": False,
        "is_active": True,
    }
    login = {"username": "carol", "password": "pw-of-carol"}
    access = (await client.post("/api/token/", json=login)).json()["access"]
    me = await client.get("/api/users/me/", headers={"Authorization": f"Bearer {access}"})
    assert me.json() == {"id": carol["id"], "username": "carol", "is_staff": False}
    users = (await client.get("/api/users/", headers=staff)).json()["results"]
    assert [u["username"] for u in users] == ["carol", "bob", "alice", "admin"]
    assert all("password" not in str(u) for u in users)


async def test_every_write_records_its_actor(client: httpx.AsyncClient, world: World, conn):
    staff, alice = world.staff.headers, world.alice.headers
    tag = (await client.post("/api/tags/", json={"name": "t"}, headers=staff)).json()["id"]
    await client.patch(f"/api/tags/{tag}/", json={"name": "t2"}, headers=staff)
    sub = (await client.post("/api/subscriptions/", json={"tag": tag}, headers=alice)).json()
    note = await client.post(
        "/api/notifications/", json={"message": "m", "tag": tag}, headers=staff
    )
    item = (await client.get("/api/inbox/?limit=1", headers=alice)).json()["results"][0]["id"]
    await client.patch(f"/api/inbox/{item}/", json={"is_read": True}, headers=alice)
    await client.post("/api/inbox/read-all/", headers=alice)
    await client.delete(f"/api/inbox/{item}/", headers=alice)
    await client.delete(f"/api/subscriptions/{sub['id']}/", headers=alice)

    rows = await conn.fetch(
        "SELECT resource, object_id, action, actor_id FROM audit_log "
        "WHERE id > (SELECT max(id) FROM audit_log WHERE actor_id IS NULL) ORDER BY id"
    )
    assert [(r["resource"], r["action"], r["actor_id"]) for r in rows] == [
        ("tag", "create", world.staff.id),
        ("tag", "update", world.staff.id),
        ("subscription", "create", world.alice.id),
        ("notification", "create", world.staff.id),
        ("user_notification", "update", world.alice.id),  # read
        ("user_notification", "update", world.alice.id),  # read-all: her two older items
        ("user_notification", "update", world.alice.id),
        ("user_notification", "update", world.alice.id),  # deleted
        ("subscription", "delete", world.alice.id),
    ]

    # The audit route filters by resource, object and actor, newest first.
    r = await client.get(
        "/api/audit/",
        params={"resource": "user_notification", "object_id": item, "actor": world.alice.id},
        headers=staff,
    )
    entries = r.json()["results"]
    assert [e["changes"].get("is_deleted") for e in entries] == [[False, True], None]
    r = await client.get(
        "/api/audit/", params={"resource": "notification", "limit": 1}, headers=staff
    )
    page = r.json()
    assert page["results"][0]["object_id"] == note.json()["id"]
    assert page["results"][0]["changes"]["recipients"] == [None, 1]
    r = await client.get(
        "/api/audit/",
        params={"resource": "notification", "before": page["next"]},
        headers=staff,
    )
    assert {e["object_id"] for e in r.json()["results"]} == {world.news_note, world.secret_note}


async def test_request_body_limit(client: httpx.AsyncClient, world: World, server):
    staff = world.staff.headers
    limit = 1024 * 1024

    def body(size: int) -> bytes:
        head = b'{"message": "m", "tag": %d, "data": {"pad": "' % world.news
        return head + b"x" * (size - len(head) - 3) + b'"}}'

    exact = body(limit)
    assert len(exact) == limit
    r = await client.post("/api/notifications/", content=exact, headers=staff)
    assert r.status_code == 201

    r = await client.post("/api/notifications/", content=body(limit + 1), headers=staff)
    assert r.status_code == 413 and r.json()["detail"]

    async def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(3):
            yield b"x" * (limit // 2)

    r = await client.post("/api/notifications/", content=chunks(), headers=staff)
    assert r.status_code == 413

    # A Content-Length far beyond the limit is refused before the body is read.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /api/tags/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
        b"Authorization: " + staff["Authorization"].encode() + b"\r\n\r\n{}"
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status.startswith(b"HTTP/1.1 413")


async def test_trailing_slash_unknown_route_and_method(
    client: httpx.AsyncClient, world: World, server
):
    staff = world.staff.headers
    r = await client.get("/api/tags", headers=staff)
    assert (r.status_code, r.headers["location"]) == (307, f"{server.http}/api/tags/")
    r = await client.post("/api/tags", json={"name": "x"}, headers=staff, follow_redirects=True)
    assert r.status_code == 201

    r = await client.get("/api/nothing/", headers=staff)
    assert r.status_code == 404 and r.json()["detail"]
    r = await client.put("/api/tags/", json={}, headers=staff)
    assert r.status_code == 405 and r.json()["detail"]
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    r = await client.get(f"/api/tags/{2**64}/", headers=staff)
    assert r.status_code == 404 and r.json()["detail"]
    r = await client.head("/api/tags/", headers=staff)
    assert r.status_code == 200
