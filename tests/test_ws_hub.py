"""The hub's bookkeeping, driven directly: what a socket is sent when events
and database snapshots interleave in the worst order (the end-to-end tests
cannot force these orders)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest

from citelink import database
from citelink.client import Client, Delivery
from citelink.events import CHANNEL, Event, parse_event
from citelink.hub import Hub

from .conftest import publish, subscribe


def frames_of(client: Client) -> list[dict]:
    frames = []
    while not client.queue.empty():
        frames += [orjson.loads(f) for f in client.queue.get_nowait()]
    return frames


# In these tests an item's position in its user's order is its id.
def new(seq: int, item_id: int, unread: int) -> Delivery:
    frame = f'{{"type":"notification","id":{item_id}}}'
    return Delivery(seq, "new", item_id, item_id, unread, frame)


def state(seq: int, kind: str, item_id: int, unread: int) -> Delivery:
    return Delivery(seq, kind, item_id, item_id, unread, f'{{"type":"{kind}","id":{item_id}}}')


def test_event_payloads_are_parsed_strictly():
    assert parse_event("new 1 2 3 4 5") == Event("new", 1, 2, 3, 4, 5)
    assert parse_event("read 1 2 3 4 0") == Event("read", 1, 2, 3, 4, 0)
    assert parse_event("fanout 7 100000") == Event("fanout", 0, 0, 7, 0, 100_000)
    assert parse_event("revoke 9") == Event("revoke", 9)
    junk = ("", "marker", "new 1 2 3 4", "new 1 2 3 4 x", "drop 1 2 3 4 5", "new 1 2 3 4 5 6")
    for payload in (*junk, "fanout 7", "fanout 7 1 2", "revoke", "revoke 9 0 0 0", "revoke x"):
        assert parse_event(payload) is None


async def test_client_sends_each_item_once_and_counts_only_on_change():
    client = Client(user_id=1, queue_size=10)
    client.last_position = 5  # the newest item when the socket opened
    client.apply([new(1, 4, 3), new(2, 6, 4), new(3, 6, 4)])
    assert frames_of(client) == [
        {"type": "notification", "id": 6},
        {"type": "counts", "unread": 4},
    ]
    client.apply([state(4, "read", 6, 3), state(5, "read", 6, 3)])
    assert frames_of(client) == [{"type": "read", "id": 6}, {"type": "counts", "unread": 3}]
    # Events received before the socket's last snapshot are already in it.
    client.after_seq = 10
    client.apply([state(9, "unread", 6, 4)])
    assert frames_of(client) == []


async def test_client_holds_events_and_releases_them_through_the_dedupe():
    client = Client(user_id=1, queue_size=3)
    client.offer([new(1, 7, 1)], hold=True)
    client.offer([state(2, "read", 7, 0)], hold=True)
    assert frames_of(client) == []
    client.last_position = 7  # a snapshot showed item 7 already read
    client.remember(7, (True, False))
    client.release()
    assert frames_of(client) == [{"type": "counts", "unread": 0}]
    # Held events are bounded like the queue: a socket that cannot keep up is closed.
    for seq in range(3, 7):
        client.offer([new(seq, seq + 10, 1)], hold=True)
    assert client.closed
    assert await client.wait_closed() == (4408, "too slow: send queue full")


async def test_client_backfill_tells_only_what_changed():
    client = Client(user_id=1, queue_size=10)
    client.last_position = 3
    client.unread = 2
    for item_id in (1, 2, 3):
        client.remember(item_id, (item_id == 1, item_id == 2))
    restored = {
        "id": 2,
        "notification_id": 2,
        "tag": 1,
        "tag_name": "t",
        "message": "back",
        "data": {},
        "timestamp": None,
        "is_read": False,
        "read_at": None,
        "position": 2,
    }
    item4 = restored | {"id": 4, "notification_id": 4, "message": "four", "position": 4}
    client.backfill(
        items=[item4],
        states={1: (True, False), 2: (False, False)},  # 3 deleted outright
        restored={2: restored},
        unread=2,
    )
    frames = frames_of(client)
    assert [(f["type"], f["id"]) for f in frames] == [
        ("notification", 2),
        ("delete", 3),
        ("notification", 4),
    ]
    assert client.last_position == 4


@pytest.fixture
async def feed(db_url, settings):
    """A hub fed by a LISTEN connection the test can mute, as if it had died."""
    pool = await database.create_pool(db_url, 4)

    async def no_barrier(pool) -> bool:
        return False

    hub = Hub(pool, settings, barrier=no_barrier, on_failure=lambda: None)
    hub.start()
    listening = await database.connect(db_url)
    control = SimpleNamespace(hub=hub, muted=False)

    def forward(conn, pid, channel, payload):
        if not control.muted:
            hub.publish(parse_event(payload))

    await listening.add_listener(CHANNEL, forward)
    await hub.resync()
    yield control
    await listening.close()
    await hub.stop()
    await pool.close()


async def test_events_arriving_before_the_backfill_wait_for_it(feed, conn, make_user):
    """Items A and B are lost with the connection; C's event arrives on the new
    connection before the back-fill has run. Sending C at once would move the
    socket's watermark past A and B, and the back-fill would skip them."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    client = Client(alice.id, 10)
    await feed.hub.attach(client)
    offered = asyncio.Event()
    offer = client.offer

    def watched_offer(deliveries, hold):
        offer(deliveries, hold)
        offered.set()

    client.offer = watched_offer

    feed.muted = True
    feed.hub.lost()
    await publish(conn, news, "A")
    await publish(conn, news, "B")
    feed.muted = False
    await publish(conn, news, "C")
    await asyncio.wait_for(offered.wait(), 5)
    assert frames_of(client) == []  # C is held, not sent

    await feed.hub.resync()
    frames = frames_of(client)
    assert [f["message"] for f in frames if f["type"] == "notification"] == ["A", "B", "C"]
    assert frames[-1] == {"type": "counts", "unread": 3}
