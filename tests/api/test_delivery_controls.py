"""Who gets what, and when: listed recipients, schedules, expiry, preferences,
critical tags, grouping and priority, through REST, plain SQL and sockets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from citelink.db.connection import connect
from tests.support.data import Partial, recipients_and_items, recipients_of
from tests.support.waiting import wait_until
from tests.support.world import World
from tests.support.wsclient import open_socket, serving


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def messages_of(client, user) -> list[str]:
    r = await client.get("/api/inbox/?limit=100", headers=user.headers)
    body = r.json()
    return [i["message"] for i in body.get("pinned", []) + body["results"]]


async def test_listed_users_get_it_once_with_or_without_a_tag(client, conn, world: World):
    staff = world.staff.headers
    r = await client.post(
        "/api/notifications/",
        json={"message": "to two", "users": [world.alice.id, world.bob.id, world.bob.id]},
        headers=staff,
    )
    assert r.status_code == 201, r.text
    assert (r.json()["tag"], r.json()["recipients"]) == (None, 2)
    r = await client.post(
        "/api/notifications/",
        json={
            "message": "tag and list",
            "tag": world.private,
            "users": [world.alice.id, world.bob.id],
        },
        headers=staff,
    )
    assert r.json()["recipients"] == 2  # alice is in both: once
    assert (await messages_of(client, world.bob))[:2] == ["tag and list", "to two"]
    alice_items = await conn.fetchval(
        "SELECT count(*) FROM user_notification WHERE user_id = $1 AND notification_id = $2",
        world.alice.id,
        r.json()["id"],
    )
    assert alice_items == 1
    page = (await client.get("/api/inbox/", headers=world.bob.headers)).json()
    (to_two,) = [i for i in page["results"] if i["message"] == "to two"]
    assert to_two["tag"] is None and to_two["tag_name"] is None


async def test_plain_sql_lists_users_too(conn, world: World):
    note = await conn.fetchval(
        "INSERT INTO notification (users, message) VALUES ($1, 'by psql') RETURNING id",
        [world.bob.id],
    )
    assert await recipients_of(conn, note) == 1
    with pytest.raises(Exception, match="notification_check"):
        await conn.execute("INSERT INTO notification (message) VALUES ('to nobody')")


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"users": [10**9, 10**9 + 1]}, "users", "no such users: 1000000000, 1000000001"),
        ({"users": []}, "users", "1 to 10000 users"),
        ({"users": list(range(1, 10_002))}, "users", "1 to 10000 users"),
        ({"users": ["1"]}, "users", "must be a user id or 'ext:<external id>'"),
        ({}, "tag", "give a tag, users, or both"),
        ({"tag": "{news}", "send_at": "tomorrow"}, "send_at", "ISO 8601"),
        ({"tag": "{news}", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at", "must be after"),
        ({"tag": "{news}", "group_window": 60}, "group_window", "needs a group_key"),
        ({"tag": "{news}", "group_key": "k", "group_window": 0}, "group_window", "between 1"),
        ({"tag": "{news}", "priority": "urgent"}, "priority", "one of: low, normal, high"),
    ],
)
async def test_bad_delivery_fields_are_a_422_naming_the_field(
    client, world: World, body, field, problem
):
    body = {k: (world.news if v == "{news}" else v) for k, v in body.items()}
    r = await client.post(
        "/api/notifications/", json={"message": "m", **body}, headers=world.staff.headers
    )
    assert r.status_code == 422, r.text
    assert problem in r.json()["errors"][field]


async def test_a_scheduled_notification_waits_then_comes_once(client, conn, world: World, server):
    staff = world.staff.headers
    async with open_socket(server, world.bob.token) as ws:
        r = await client.post(
            "/api/notifications/",
            json={"message": "later", "tag": world.news, "send_at": soon(1.0)},
            headers=staff,
        )
        note = r.json()
        assert (note["delivered_at"], note["recipients"]) == (None, 0)
        listed = await client.get("/api/notifications/?status=scheduled", headers=staff)
        assert [n["id"] for n in listed.json()["results"]] == [note["id"]]
        assert "later" not in await messages_of(client, world.bob)
        pushed = await ws.until_message("later", within=10)
        assert pushed[-1]["notification_id"] == note["id"]
    after = (await client.get(f"/api/notifications/{note['id']}/", headers=staff)).json()
    assert after["delivered_at"] is not None and after["recipients"] == 2
    assert (await messages_of(client, world.bob))[0] == "later"
    # Delivered: it can no longer be cancelled.
    r = await client.delete(f"/api/notifications/{note['id']}/", headers=staff)
    assert r.status_code == 409
    audit = await conn.fetch(
        "SELECT changes FROM audit_log WHERE resource = 'notification' AND object_id = $1 "
        "AND action = 'update' ORDER BY id",
        note["id"],
    )
    assert [sorted(a["changes"]) for a in audit] == [["delivered_at"]]


async def test_a_scheduled_notification_can_be_cancelled_before_it_is_due(
    client, conn, world: World
):
    staff = world.staff.headers
    r = await client.post(
        "/api/notifications/",
        json={"message": "never", "tag": world.news, "send_at": soon(3600)},
        headers=staff,
    )
    note = r.json()["id"]
    assert (await client.delete(f"/api/notifications/{note}/", headers=staff)).status_code == 204
    assert (await client.get(f"/api/notifications/{note}/", headers=staff)).status_code == 404
    assert (await client.delete(f"/api/notifications/{note}/", headers=staff)).status_code == 404


async def test_scheduled_notifications_come_once_with_two_processes_and_a_restart(
    settings, conn, world: World
):
    """300 notifications due within 2 s, two app processes' schedulers at work,
    one of them stopped and started again in the middle: each is fanned out
    exactly once."""
    start = datetime.now(UTC) + timedelta(seconds=1)
    await conn.execute(
        "INSERT INTO notification (tag_id, message, send_at) "
        "SELECT $1, 'scheduled ' || g, $2::timestamptz + g * interval '7 milliseconds' "
        "FROM generate_series(1, 300) g",
        world.news,
        start,
    )
    async with serving(settings):
        second = serving(settings)
        await second.__aenter__()
        await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 0.5)
        await second.__aexit__(None, None, None)
        async with serving(settings):

            async def all_delivered() -> bool:
                return not await conn.fetchval(
                    "SELECT count(*) FROM notification WHERE delivered_at IS NULL"
                )

            await wait_until(all_delivered, within=20)
    rows = await recipients_and_items(conn, "scheduled %")
    assert len(rows) == 300 and set(rows) == {(2, 2)}


async def test_expired_items_leave_lists_and_counts_and_sockets_hear_of_it(
    client, conn, world: World, server
):
    async with open_socket(server, world.alice.token) as ws:
        r = await client.post(
            "/api/notifications/",
            json={"message": "brief", "tag": world.private, "expires_at": soon(1.0)},
            headers=world.staff.headers,
        )
        note = r.json()["id"]
        (push,) = [f for f in await ws.recv_until("counts") if f["type"] == "notification"]
        assert push["expires_at"] is not None and "brief" in await messages_of(client, world.alice)
        frames = await ws.recv_until("counts", within=10)
        assert {"type": "expire", "id": push["id"]} in frames
    assert "brief" not in await messages_of(client, world.alice)
    counts = (await client.get("/api/inbox/counts/", headers=world.alice.headers)).json()
    assert counts == Partial(total=2, unread=2)
    # Kept, and visible to staff.
    shown = (await client.get(f"/api/notifications/{note}/", headers=world.staff.headers)).json()
    assert shown["expired_at"] is not None
    assert await conn.fetchval(
        "SELECT is_expired FROM user_notification WHERE notification_id = $1", note
    )


async def test_expiry_is_evaluated_on_read_at_the_boundary(client, conn, world: World):
    """An item past expires_at is out of the list at once, before any job
    marked it; one that expires later is still in."""
    await conn.execute(
        "INSERT INTO notification (tag_id, message, expires_at) VALUES "
        "($1, 'past', now()), ($1, 'future', now() + interval '1 hour')",
        world.private,
    )
    listed = await messages_of(client, world.alice)
    assert "past" not in listed and "future" in listed


@pytest.mark.parametrize(
    ("mode", "pushed", "counted"),
    [("live", True, True), ("inbox", False, True), ("muted", False, False)],
)
async def test_each_mode_stores_counts_and_pushes_as_it_says(
    client, world: World, server, mode, pushed, counted
):
    r = await client.patch(
        f"/api/subscriptions/{world.bob_sub}/", json={"mode": mode}, headers=world.bob.headers
    )
    assert r.json() == Partial(id=world.bob_sub, mode=mode)
    before = (await client.get("/api/inbox/counts/", headers=world.bob.headers)).json()
    async with open_socket(server, world.bob.token) as ws:
        await client.post(
            "/api/notifications/",
            json={"message": f"{mode} one", "tag": world.news},
            headers=world.staff.headers,
        )
        await client.post(
            "/api/notifications/",
            json={"message": "direct marker", "users": [world.bob.id]},
            headers=world.staff.headers,
        )
        frames = await ws.until_message("direct marker")
    assert (f"{mode} one" in [f.get("message") for f in frames]) == pushed
    assert f"{mode} one" in await messages_of(client, world.bob)  # stored either way
    after = (await client.get("/api/inbox/counts/", headers=world.bob.headers)).json()
    assert after["total"] - before["total"] == 2
    assert after["unread"] - before["unread"] == (2 if counted else 1)


async def test_a_critical_tag_ignores_mutes(client, world: World, server):
    await client.patch(
        f"/api/subscriptions/{world.bob_sub}/", json={"mode": "muted"}, headers=world.bob.headers
    )
    r = await client.patch(
        f"/api/tags/{world.news}/", json={"critical": True}, headers=world.staff.headers
    )
    assert r.json()["critical"] is True
    async with open_socket(server, world.bob.token) as ws:
        await client.post(
            "/api/notifications/",
            json={"message": "fire drill", "tag": world.news},
            headers=world.staff.headers,
        )
        assert [f["message"] for f in await ws.until_message("fire drill")][-1] == "fire drill"
    # A user may set only their own subscription's mode.
    r = await client.patch(
        f"/api/subscriptions/{world.bob_sub}/", json={"mode": "live"}, headers=world.alice.headers
    )
    assert r.status_code == 404


async def test_grouped_notifications_update_one_item_per_user(client, conn, world: World, server):
    staff = world.staff.headers
    async with open_socket(server, world.bob.token) as ws:
        ids = []
        for n in range(3):
            r = await client.post(
                "/api/notifications/",
                json={"message": f"{n + 1} new comments", "tag": world.news, "group_key": "post-7"},
                headers=staff,
            )
            ids.append(r.json()["id"])
            pushed = await ws.until_message(f"{n + 1} new comments")
        item_id = pushed[-1]["id"]
        assert (pushed[-1]["count"], pushed[-1]["notification_ids"]) == (3, ids)
    rows = await conn.fetch(
        "SELECT user_id, id, count, notification_ids, notification_id FROM user_notification "
        "WHERE group_key = 'post-7' ORDER BY user_id"
    )
    assert [(r["count"], r["notification_ids"], r["notification_id"]) for r in rows] == [
        (3, ids, ids[-1])
    ] * 2
    first = (await client.get("/api/inbox/?limit=1", headers=world.bob.headers)).json()
    assert first["results"][0]["id"] == item_id  # moved to the top
    assert first["results"][0]["message"] == "3 new comments"
    # Every notification row stays.
    assert await conn.fetchval("SELECT count(*) FROM notification WHERE id = ANY($1)", ids) == 3
    # Once read, the next one of the key starts a new item.
    await client.patch(f"/api/inbox/{item_id}/", json={"is_read": True}, headers=world.bob.headers)
    await client.post(
        "/api/notifications/",
        json={"message": "4 new comments", "tag": world.news, "group_key": "post-7"},
        headers=staff,
    )
    counts = await conn.fetchval(
        "SELECT array_agg(count ORDER BY id) FROM user_notification "
        "WHERE user_id = $1 AND group_key = 'post-7'",
        world.bob.id,
    )
    assert counts == [3, 1]


async def test_concurrent_publishes_of_one_key_group_together(db_url, conn, world: World):
    publishers = [await connect(db_url) for _ in range(6)]
    try:
        await asyncio.gather(
            *(
                c.execute(
                    "INSERT INTO notification (tag_id, message, group_key) "
                    "VALUES ($1, $2, 'together')",
                    world.news,
                    f"n{i}",
                )
                for i, c in enumerate(publishers)
            )
        )
    finally:
        for c in publishers:
            await c.close()
    rows = await conn.fetch(
        "SELECT user_id, count, cardinality(notification_ids) AS ids FROM user_notification "
        "WHERE group_key = 'together' ORDER BY user_id"
    )
    assert [(r["count"], r["ids"]) for r in rows] == [(6, 6), (6, 6)]
    # Each move took a new position: one per notification, none skipped.
    for user in (world.alice.id, world.bob.id):
        positions = await conn.fetchval(
            "SELECT last_position FROM inbox_count WHERE user_id = $1", user
        )
        items = await conn.fetchval(
            "SELECT count(*) FROM user_notification WHERE user_id = $1", user
        )
        assert positions == items + 5  # five moves


async def test_high_priority_unread_items_are_pinned(client, world: World):
    staff = world.staff.headers
    await client.post(
        "/api/notifications/",
        json={"message": "urgent", "tag": world.news, "priority": "high"},
        headers=staff,
    )
    await client.post(
        "/api/notifications/", json={"message": "later news", "tag": world.news}, headers=staff
    )
    page = (await client.get("/api/inbox/", headers=world.bob.headers)).json()
    assert [i["message"] for i in page["pinned"]] == ["urgent"]
    assert [i["message"] for i in page["results"]] == ["later news", "hello everyone"]
    urgent = page["pinned"][0]["id"]
    await client.patch(f"/api/inbox/{urgent}/", json={"is_read": True}, headers=world.bob.headers)
    page = (await client.get("/api/inbox/", headers=world.bob.headers)).json()
    assert page["pinned"] == []
    assert [i["message"] for i in page["results"]] == ["later news", "urgent", "hello everyone"]
