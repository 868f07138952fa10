"""`resume`: a client that was away gets every item it missed, in order, once."""

from __future__ import annotations

import asyncio

from citelink.db.connection import connect
from tests.support.data import publish, subscribe
from tests.support.waiting import waits_for
from tests.support.wsclient import StalledSocket, messages, open_socket, serving


async def test_resume_after_a_disconnect(server, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    async with open_socket(server, alice.token) as ws:
        await publish(conn, news, "seen")
        (seen,) = [f for f in await ws.recv_until("counts") if f["type"] == "notification"]

    # While away: two new items, one of them deleted, and an old one read.
    await publish(conn, news, "missed 1")
    await publish(conn, news, "missed and deleted")
    await publish(conn, news, "missed 2")
    await conn.execute(
        "UPDATE user_notification SET is_deleted = true WHERE notification_id = "
        "(SELECT id FROM notification WHERE message = 'missed and deleted')"
    )

    async with open_socket(server, alice.token) as ws:
        await ws.send(type="resume", after=seen["id"])
        frames = await ws.recv_until("resumed")
        assert messages(frames) == ["missed 1", "missed 2"]
        assert frames[-1] == {"type": "resumed", "count": 2, "last_id": frames[-2]["id"]}
        assert all(f["is_read"] is False for f in frames[:-1])
        # Live pushes continue after the replay, and the replay is not repeated.
        await publish(conn, news, "live")
        frames = await ws.recv_until("counts")
        assert messages(frames) == ["live"]


async def test_items_committed_during_a_replay_are_sent_once(settings, conn, make_user):
    """The client reads slowly, so the replay (in batches of 500) is still
    running when new items commit: they come once, by replay or live."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    # 12 MB of history: far more than the socket buffers hold.
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'old ' || g || ' ' || repeat('x', 4000) FROM generate_series(1, 3000) g",
        news,
    )
    async with serving(settings) as server:
        ws = await StalledSocket.open(server, alice.token)
        ws.send(type="resume", after=0)
        await ws.read_until(lambda frame: frame["type"] == "notification")
        # The replay has started and is now stuck behind the unread socket.
        for i in range(20):
            await publish(conn, news, f"new {i}")
        await publish(conn, news, "last")
        await ws.read_until(lambda frame: frame["type"] == "resumed", within=15)
        # Whatever was held during the replay comes before this live marker.
        await publish(conn, news, "marker")
        await ws.read_until(lambda frame: frame.get("message") == "marker")
        await ws.close()
    ids = [f["id"] for f in ws.frames if f["type"] == "notification"]
    assert ids == [
        r["id"] for r in await conn.fetch("SELECT id FROM user_notification ORDER BY id")
    ]
    assert [f["type"] for f in ws.frames].count("resumed") == 1
    resumed = next(i for i, f in enumerate(ws.frames) if f["type"] == "resumed")
    # The replay reached items that committed while it ran.
    assert not ws.frames[resumed - 1]["message"].startswith("old ")


async def test_resume_never_skips_an_item_committed_late(server, conn, db_url, make_user):
    """Two publishers: the first holds its transaction open, the second (a higher
    notification id) wants to commit first. Alice's items are numbered in
    commit order (the second waits on her counter row), so a client resuming
    after the last item it saw never skips the one that committed late."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    first = await connect(db_url)
    second = await connect(db_url)
    try:
        async with open_socket(server, alice.token) as ws:
            await publish(conn, news, "before")
            (before,) = [f for f in await ws.recv_until("counts") if f["type"] == "notification"]

            slow = first.transaction()
            await slow.start()
            await publish(first, news, "slow, first id")
            fast = asyncio.create_task(publish(second, news, "fast, second id"))
            await waits_for(conn, second, first)

            # A client resuming now sees neither (neither has committed)...
            await ws.send(type="resume", after=before["id"])
            assert await ws.recv() == {"type": "resumed", "count": 0, "last_id": before["id"]}
            await slow.commit()
            await fast
            # ...and then gets both, live, in commit order.
            frames = await ws.until_message("fast, second id")
            assert messages(frames) == ["slow, first id", "fast, second id"]

        # A client that was away for all of it resumes from the same point.
        async with open_socket(server, alice.token) as ws:
            await ws.send(type="resume", after=before["id"])
            frames = await ws.recv_until("resumed")
            assert messages(frames) == ["slow, first id", "fast, second id"]
            assert frames[1]["position"] == frames[0]["position"] + 1
            assert frames[0]["notification_id"] < frames[1]["notification_id"]
            await publish(conn, news, "marker")
            assert messages(await ws.until_message("marker")) == ["marker"]
    finally:
        await first.close()
        await second.close()


async def test_resume_right_after_connecting_does_not_repeat_what_was_pushed(
    server, conn, make_user
):
    """A client that reconnects and resumes may be pushed new items before its
    resume is handled: the replay leaves those out."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await publish(conn, news, "missed")
    async with open_socket(server, alice.token) as ws:
        await publish(conn, news, "pushed")
        assert messages(await ws.recv_until("counts")) == ["pushed"]
        await ws.send(type="resume", after=0)
        frames = await ws.recv_until("resumed")
        assert messages(frames) == ["missed"]
        assert frames[-1]["count"] == 1
