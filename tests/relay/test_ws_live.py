"""Live pushes and sync: every socket of a user sees every change, whatever made it."""

from __future__ import annotations

from citelink.relay.frames import UNTOUCHED
from citelink.relay.rendering import Renderer
from tests.support.data import Partial, publish, subscribe, unread_counts
from tests.support.world import ITEM_KEYS
from tests.support.wsclient import messages, open_socket


async def items_of(conn, user_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM user_notification WHERE user_id = $1 ORDER BY id", user_id
    )
    return [r["id"] for r in rows]


async def test_push_on_plain_sql_insert(server, conn, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "sports")

    async with open_socket(server, alice.token) as ws, open_socket(server, bob.token) as other:
        note = await publish(conn, news, "hello from psql")
        push = await ws.recv()
        (item,) = await items_of(conn, alice.id)
        assert push == {
            "type": "notification",
            "id": item,
            "notification_id": note,
            "tag": news,
            "tag_name": "news",
            "message": "hello from psql",
            "data": {},
            "timestamp": push["timestamp"],
            "position": 1,
            "priority": "normal",
            "group_key": None,
            "expires_at": None,
            **UNTOUCHED,
        }
        assert push["timestamp"].endswith("Z")
        assert await ws.recv() == unread_counts(1)
        # Bob is not subscribed: the next frame he gets is the answer to his ping.
        assert await other.request("ping") == {"type": "pong"}


async def test_push_on_api_publish(server, client, conn, make_user):
    staff = await make_user("admin", staff=True)
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    long_message = "é" * 100_000

    async with open_socket(server, alice.token) as ws:
        response = await client.post(
            "/api/notifications/",
            json={"message": long_message, "tag": news, "data": {"url": "/x"}},
            headers=staff.headers,
        )
        assert response.status_code == 201, response.text
        push = await ws.recv()
        assert push["notification_id"] == response.json()["id"]
        assert push["message"] == long_message
        assert push["data"] == {"url": "/x"}
        assert push["timestamp"] == response.json()["timestamp"]
        assert await ws.recv() == unread_counts(1)
        # The publishing process renders the push from what it published; it
        # must match the item as the inbox reads it back.
        (item,) = (await ws.request("notifications_list", page=1, page_size=5))["data"]
        assert push == {"type": "notification", **item}


async def test_two_sockets_stay_in_sync_whatever_changes_the_item(server, client, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await publish(conn, news, "one")
    await publish(conn, news, "two")
    first, second = await items_of(conn, alice.id)

    async with open_socket(server, alice.token) as tab1, open_socket(server, alice.token) as tab2:

        async def both(*expected: dict) -> None:
            for tab in (tab1, tab2):
                assert [await tab.recv() for _ in expected] == list(expected)

        # From a socket: the sender hears it like everyone else.
        await tab1.send(type="read", id=first)
        await both({"type": "read", "id": first}, unread_counts(1))

        # From plain SQL.
        await conn.execute("UPDATE user_notification SET is_read = false WHERE id = $1", first)
        await both({"type": "unread", "id": first}, unread_counts(2))

        # From REST.
        response = await client.patch(
            f"/api/inbox/{second}/", json={"is_read": True}, headers=alice.headers
        )
        assert response.status_code == 200, response.text
        await both({"type": "read", "id": second}, unread_counts(1))

        # Seed spelling of delete, from the other tab; a read item: unread unchanged.
        await tab2.send(type="deleted", id=second)
        await both({"type": "delete", "id": second}, Partial(type="counts", unread=1, total=1))
        response = await client.delete(f"/api/inbox/{first}/", headers=alice.headers)
        assert response.status_code == 204
        await both({"type": "delete", "id": first}, unread_counts(0))

        # The same change twice is no change: nothing is sent the second time.
        await tab1.send(type="read", id=first)
        assert await tab1.recv() == {
            "type": "error",
            "code": "not_found",
            "detail": "no such notification",
        }
        # Nothing else came: the next frame on either tab answers a ping.
        for tab in (tab1, tab2):
            assert await tab.request("ping") == {"type": "pong"}
        assert await tab2.request("ping") == {"type": "pong"}

    rows = await conn.fetch(
        "SELECT is_deleted FROM user_notification WHERE user_id = $1 ORDER BY id", alice.id
    )
    assert [r["is_deleted"] for r in rows] == [True, True]


async def test_read_all_and_counts(server, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    sports = await subscribe(conn, alice.id, "sports")
    for tag, text in ((news, "n1"), (news, "n2"), (sports, "s1")):
        await publish(conn, tag, text)
    n1, n2, s1 = await items_of(conn, alice.id)

    async with open_socket(server, alice.token) as ws:
        assert await ws.request("counts") == unread_counts(3)
        await ws.send(type="read_all", tag=news)
        frames = await ws.recv_until("read_all")
        assert frames[-1] == {"type": "read_all", "updated": 2}
        # The events may arrive before or after the answer; one counts frame at most each.
        frames += [await ws.recv() for _ in range(4 - len(frames))]
        assert sorted((f["type"], f.get("id")) for f in frames if f["type"] == "read") == [
            ("read", n1),
            ("read", n2),
        ]
        assert [f for f in frames if f["type"] == "counts"][-1] == unread_counts(1)
        await ws.send(type="read_all")
        frames = await ws.recv_until("counts")
        assert {"type": "read", "id": s1} in frames
        assert frames[-1] == unread_counts(0)


async def test_seed_numbered_pages(server, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    for i in range(7):
        await publish(conn, news, f"m{i}")
    ids = await items_of(conn, alice.id)
    await conn.execute("UPDATE user_notification SET is_deleted = true WHERE id = $1", ids[0])

    async with open_socket(server, alice.token) as ws:
        # Exactly the seed client's frame.
        answer = await ws.request("notifications_list", page=1, page_size=5)
        assert answer["type"] == "notifications_list"
        assert [i["message"] for i in answer["data"]] == ["m6", "m5", "m4", "m3", "m2"]
        assert (answer["total_pages"], answer["page"], answer["total"]) == (2, 1, 6)
        assert set(answer["data"][0]) == ITEM_KEYS
        answer = await ws.request("notifications_list", page=2, page_size=5)
        assert [i["message"] for i in answer["data"]] == ["m1"]  # m0 is deleted
        answer = await ws.request("notifications_list", page=3, page_size=5)
        assert answer["data"] == [] and answer["total_pages"] == 2


async def test_cursor_pages(server, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    for i in range(5):
        await publish(conn, news, f"m{i}")
    ids = await items_of(conn, alice.id)
    await conn.execute("UPDATE user_notification SET is_read = true WHERE id = $1", ids[3])

    async with open_socket(server, alice.token) as ws:
        answer = await ws.request("notifications_list", before=None, limit=2)
        assert [i["message"] for i in answer["data"]] == ["m4", "m3"]
        assert answer["next"] == ids[3]
        answer = await ws.request("notifications_list", before=answer["next"], limit=2)
        assert [i["message"] for i in answer["data"]] == ["m2", "m1"]
        answer = await ws.request("notifications_list", before=answer["next"], limit=2)
        assert [i["message"] for i in answer["data"]] == ["m0"]
        assert answer["next"] is None
        answer = await ws.request("notifications_list", limit=10, status="read")
        assert [i["id"] for i in answer["data"]] == [ids[3]]


async def test_content_is_read_once_per_notification(server, conn, make_user, monkeypatch):
    """Three connected recipients, two offline: one content query, for one id."""
    loads: list[list[int]] = []
    original = Renderer._load_content

    async def counting(self, notification_ids):
        loads.append(sorted(notification_ids))
        return await original(self, notification_ids)

    monkeypatch.setattr(Renderer, "_load_content", counting)
    users = [await make_user(f"u{i}") for i in range(5)]
    for user in users:
        news = await subscribe(conn, user.id, "news")
    quiet = await subscribe(conn, users[0].id, "quiet")

    online = users[:3]
    async with (
        open_socket(server, online[0].token) as a,
        open_socket(server, online[1].token) as b,
        open_socket(server, online[2].token) as c,
        open_socket(server, online[2].token) as c2,
    ):
        note = await publish(conn, news, "to everyone")
        for ws in (a, b, c, c2):
            assert messages(await ws.recv_until("counts")) == ["to everyone"]
        assert loads == [[note]]

        # A tag whose only subscriber is online elsewhere... and one with nobody online.
        await conn.execute(
            "INSERT INTO subscription (user_id, tag_id) SELECT id, $1 FROM users "
            "WHERE username IN ('u3', 'u4')",
            quiet,
        )
        await conn.execute(
            "DELETE FROM subscription WHERE user_id = $1 AND tag_id = $2", users[0].id, quiet
        )
        await publish(conn, quiet, "nobody here")
        await publish(conn, news, "marker")
        assert messages(await a.until_message("marker")) == ["marker"]
        assert loads == [[note], [note + 2]]


async def test_many_notifications_in_one_transaction_arrive_in_order(server, conn, make_user):
    """More notifications than the content cache holds, all in one commit."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    async with open_socket(server, alice.token) as ws:
        await conn.execute(
            "INSERT INTO notification (tag_id, message) SELECT $1, 'bulk ' || g "
            "FROM generate_series(1, 300) g",
            news,
        )
        frames = await ws.until_message("bulk 300")
        assert messages(frames) == [f"bulk {i}" for i in range(1, 301)]
        counts = [f["unread"] for f in frames if f["type"] == "counts"]
        assert counts == sorted(counts)
        assert (counts or [None])[-1] in (300, None)
        if counts[-1:] != [300]:
            assert await ws.recv() == unread_counts(300)


async def test_item_restored_by_plain_sql_reappears(server, conn, make_user):
    """No API undeletes, but SQL may: the item is pushed again, as it is now."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await publish(conn, news, "back again")
    (item,) = await items_of(conn, alice.id)
    await conn.execute("UPDATE user_notification SET is_read = true WHERE id = $1", item)
    async with open_socket(server, alice.token) as ws:
        await conn.execute("UPDATE user_notification SET is_deleted = true WHERE id = $1", item)
        assert await ws.recv() == {"type": "delete", "id": item}
        assert await ws.recv() == unread_counts(0)
        await conn.execute("UPDATE user_notification SET is_deleted = false WHERE id = $1", item)
        push = await ws.recv()
        assert (push["type"], push["id"], push["message"]) == ("notification", item, "back again")
        assert push["is_read"] is True and push["read_at"] is not None
        assert await ws.recv() == Partial(type="counts", unread=0, total=1)
        assert await ws.request("ping") == {"type": "pong"}
