"""The two socket protocols, and the per-user cap that evicts a socket.

A client that offers no subprotocol (the seed's demo client) gets exactly the
frames the original server sent, so it renders no blank rows; one that offers
`citelink.v1` gets the extended protocol.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from citelink.relay.protocol import EXTENDED, REPLACED
from tests.support.data import publish, publish_many, subscribe
from tests.support.waiting import wait_until
from tests.support.wsclient import open_socket, serving

# Every frame type the seed's server ever sent (its pushes had none).
SEED_TYPES = {"notification", "notifications_list", "read", "delete", "error"}


async def test_the_seed_protocol_sends_only_the_seeds_frames(server, client, conn, make_user):
    """Publish (REST and SQL), read and delete (another socket, REST, SQL),
    unread and read-all (REST): the seed socket sees pushes and the read and
    delete echoes, never `counts`, `unread` or anything else."""
    staff, alice = await make_user("admin", staff=True), await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    async with (
        open_socket(server, alice.token, seed=True) as seed,
        open_socket(server, alice.token) as extended,
    ):
        assert seed.connection.subprotocol is None
        assert extended.connection.subprotocol == EXTENDED
        r = await client.post(
            "/api/notifications/", json={"message": "by REST", "tag": news}, headers=staff.headers
        )
        by_rest = r.json()["id"]
        await publish(conn, news, "by SQL")
        items = {
            r["notification_id"]: r["id"]
            for r in await conn.fetch("SELECT id, notification_id FROM user_notification")
        }
        first, second = items[by_rest], max(items.values())
        await extended.send(type="read", id=first)
        # The socket's read lands before the REST unread, or the unread changes nothing.
        frames: list[dict] = []
        while {"type": "read", "id": first} not in frames:
            frames.append(await extended.recv())
        await client.patch(f"/api/inbox/{first}/", json={"is_read": False}, headers=alice.headers)
        await client.post("/api/inbox/read-all/", headers=alice.headers)
        await client.delete(f"/api/inbox/{first}/", headers=alice.headers)
        await conn.execute("UPDATE user_notification SET is_deleted = true WHERE id = $1", second)
        # The extended socket sees all of it, counts included...
        while {"type": "delete", "id": second} not in frames:
            frames.append(await extended.recv())
        assert {f["type"] for f in frames} == {"notification", "read", "unread", "delete", "counts"}
        # ...and the seed socket only the seed's frames, in the same order.
        await seed.send(type="notifications_list", page=1, page_size=10)
        seen = await seed.recv_until("notifications_list")
    assert {f["type"] for f in seen} <= SEED_TYPES
    # The read, the (unseen) unread, read-all reading both, the deletes.
    assert [(f["type"], f.get("id")) for f in seen[:-1]] == [
        ("notification", first),
        ("notification", second),
        ("read", first),
        ("read", first),
        ("read", second),
        ("delete", first),
        ("delete", second),
    ]
    # What the demo client reads of a push, at the top level.
    push = seen[0]
    assert {"id", "notification_id", "message", "is_read", "timestamp"} <= push.keys()
    assert seen[-1]["data"] == [] and seen[-1]["total_pages"] == 0


async def test_the_seed_protocol_answers_extended_frames_with_an_error(server, make_user):
    alice = await make_user("alice")
    async with open_socket(server, alice.token, seed=True) as ws:
        for kind in ("ping", "resume", "counts", "unread", "read_all", "auth"):
            assert await ws.request(kind, id=1, after=0) == {
                "type": "error",
                "code": "unknown_type",
                "detail": f"unknown frame type {kind!r}",
            }
        listed = await ws.request("notifications_list", page=1, page_size=5)
        assert listed == {
            "type": "notifications_list",
            "data": [],
            "total_pages": 0,
            "page": 1,
            "total": 0,
        }


async def test_a_client_that_opens_a_socket_per_click_keeps_working(settings, conn, make_user):
    """The demo client opens a new socket for every "mark as read" or "delete"
    click and never closes one: 100 clicks, each on the newest socket, all
    take effect; the oldest sockets are closed (4409) as the cap is passed, so
    no more than the cap are ever open."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'item ' || g FROM generate_series(1, 100) g",
        news,
    )
    items = [r["id"] for r in await conn.fetch("SELECT id FROM user_notification ORDER BY id")]
    cap = 20
    # Clicks faster than a person's: past the user's frame budget, which is
    # shared by all their sockets.
    changes = {"ws_max_sockets_per_user": cap, "ws_frames_per_second": 1000}
    async with serving(settings, **changes) as server, AsyncExitStack() as stack:
        opened = []
        for click, item in enumerate(items):
            ws = await stack.enter_async_context(open_socket(server, alice.token, seed=True))
            opened.append(ws)
            await ws.send(type="read" if click % 2 else "deleted", id=item)
            if click >= cap:
                # The socket `cap` clicks back has just been replaced.
                assert await opened[click - cap].close_code() == REPLACED
        expected = [(i % 2 == 1, i % 2 == 0) for i in range(100)]

        async def applied() -> bool:
            rows = await conn.fetch("SELECT is_read, is_deleted FROM user_notification ORDER BY id")
            return [tuple(r) for r in rows] == expected

        await wait_until(applied)
        # The newest are all open, and see the inbox as the clicks left it.
        for ws in opened[-cap:]:
            await ws.send(type="notifications_list", page=1, page_size=100)
        for ws in opened[-cap:]:
            listed = (await ws.recv_until("notifications_list"))[-1]
            assert listed["total"] == 50 and all(item["is_read"] for item in listed["data"])


async def test_the_sockets_someone_looks_at_outlive_the_per_click_ones(settings, conn, make_user):
    """The demo client's list page (a socket that asked for the list) and a
    second tab (a socket that never sent anything) stay open while 30 clicks
    each open a socket of their own: past the cap the click sockets go, oldest
    first, and both views get every echo and a push after the clicks."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await publish_many(conn, news, 30)
    items = [r["id"] for r in await conn.fetch("SELECT id FROM user_notification ORDER BY id")]
    cap = 5
    async with serving(settings, ws_max_sockets_per_user=cap) as server, AsyncExitStack() as stack:
        page = await stack.enter_async_context(open_socket(server, alice.token, seed=True))
        await page.send(type="notifications_list", page=1, page_size=100)
        assert (await page.recv())["total"] == 30
        tab = await stack.enter_async_context(open_socket(server, alice.token, seed=True))
        clicks = []
        for item in items:
            ws = await stack.enter_async_context(open_socket(server, alice.token, seed=True))
            await ws.send(type="read", id=item)
            # Its echo: the click is applied before the next socket opens.
            assert await ws.recv() == {"type": "read", "id": item}
            clicks.append(ws)
        # The click sockets were replaced oldest first; the two views were not.
        for ws in clicks[: -(cap - 2)]:
            assert await ws.close_code() == REPLACED
        await publish(conn, news, "after the clicks")
        for view in (page, tab):
            frames = await view.until_message("after the clicks")
            assert [f["id"] for f in frames if f["type"] == "read"] == items
