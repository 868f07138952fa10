"""The hub's bookkeeping, driven directly: what a socket is sent when events
and database snapshots interleave in the worst order (the end-to-end tests
cannot force these orders)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest

from citelink.db.connection import connect, create_pool
from citelink.relay.events import (
    ARCHIVED,
    CHANNEL,
    DELETED,
    INTERACTED,
    READ,
    SEEN,
    Counts,
    Event,
    parse_event,
)
from citelink.relay.frames import UNTOUCHED
from citelink.relay.hub import Hub
from citelink.relay.peers import Delivery, Peer
from tests.support.data import publish, subscribe


def frames_of(client: Peer) -> list[dict]:
    frames = []
    while not client.queue.empty():
        frames += [orjson.loads(f) for f in client.queue.get_nowait()]
    return frames


def counts(unread: int) -> Counts:
    """Counts of a list of `unread` + 1 items, the unread ones unseen."""
    return Counts(unseen=unread, unread=unread, total=unread + 1, archived=0)


def counts_frame(unread: int) -> dict:
    return {"type": "counts", **counts(unread)._asdict()}


# In these tests an item's position in its user's order is its id.
def new(seq: int, item_id: int, unread: int) -> Delivery:
    frame = f'{{"type":"notification","id":{item_id}}}'
    return Delivery(seq, "new", item_id, item_id, 0, 0, counts(unread), frame)


def change(seq: int, item_id: int, old: int, now: int, unread: int) -> Delivery:
    return Delivery(seq, "change", item_id, item_id, old, now, counts(unread))


def test_event_payloads_are_parsed_strictly():
    item = parse_event("change 1 2 3 4 0 3 5 6 7 8")
    assert item == Event("change", 1, 2, 3, 4, 0, 3, Counts(5, 6, 7, 8))
    assert parse_event("bulk 1 5000 0 1 2 3") == Event(
        "bulk", 1, items=5000, counts=Counts(0, 1, 2, 3)
    )
    assert parse_event("fanout 7 100000") == Event("fanout", notification_id=7, items=100_000)
    assert parse_event("revoke 9 3 1") == Event("revoke", 9, generation=3, active=True)
    junk = ("", "marker", "new 1 2 3 4 0 0 1 1 1", "new 1 2 3 4 0 0 1 1 1 x", "drop 1 2 3 4 5")
    for payload in (
        *junk,
        "new 1 2 3 4 0 0 1 1 1 0 9",
        "fanout 7",
        "bulk 1 2",
        "revoke 9 0",
        "revoke 9",
    ):
        assert parse_event(payload) is None


async def test_client_sends_each_item_once_and_counts_only_on_change():
    client = Peer(user_id=1, queue_size=10)
    client.last_position = 5  # the newest item when the socket opened
    client.apply([new(1, 4, 3), new(2, 6, 4), new(3, 6, 4)])
    assert frames_of(client) == [{"type": "notification", "id": 6}, counts_frame(4)]
    client.apply([change(4, 6, 0, SEEN | READ, 3), change(5, 6, 0, SEEN | READ, 3)])
    # Reading implies seen: one frame tells both.
    assert frames_of(client) == [{"type": "read", "id": 6}, counts_frame(3)]
    # Events received before the socket's last snapshot are already in it.
    client.after_seq = 10
    client.apply([change(9, 6, SEEN | READ, SEEN, 4)])
    assert frames_of(client) == []


async def test_each_protocol_is_told_its_own_frames():
    """Seen, archive, interact, unarchive, delete: the seed protocol hears of a
    read, and of items leaving (or coming back to) its list, and nothing else."""
    item = {"id": 7, "action": "open", "message": "m"}
    steps = [
        (0, SEEN),
        (SEEN, SEEN | READ | INTERACTED),
        (SEEN | READ | INTERACTED, SEEN | READ | INTERACTED | ARCHIVED),
        (SEEN | READ | INTERACTED | ARCHIVED, SEEN | READ | INTERACTED),
        (SEEN | READ | INTERACTED, SEEN | READ | INTERACTED | DELETED),
    ]
    told = {}
    for extended in (True, False):
        client = Peer(user_id=1, queue_size=10, extended=extended)
        for seq, (old, now) in enumerate(steps, 1):
            client.apply([Delivery(seq, "change", 7, 7, old, now, counts(0), current=item)])
        told[extended] = [(f["type"], f.get("action")) for f in frames_of(client)]
    assert told[True] == [
        ("seen", None),
        ("counts", None),
        ("interact", "open"),  # implies read
        ("archive", None),
        ("unarchive", None),
        ("delete", None),
    ]
    # Archived: gone from its list; unarchived: pushed again.
    assert told[False] == [
        ("read", None),
        ("delete", None),
        ("notification", "open"),
        ("delete", None),
    ]


async def test_client_holds_events_and_releases_them_through_the_dedupe():
    client = Peer(user_id=1, queue_size=3)
    client.offer([new(1, 7, 1)], hold=True)
    client.offer([change(2, 7, 0, SEEN | READ, 0)], hold=True)
    assert frames_of(client) == []
    client.last_position = 7  # a snapshot showed item 7 already read
    client.remember(7, SEEN | READ)
    client.release()
    assert frames_of(client) == [counts_frame(0)]
    # Held events are bounded like the queue: a socket that cannot keep up is closed.
    for seq in range(3, 7):
        client.offer([new(seq, seq + 10, 1)], hold=True)
    assert client.closed
    assert await client.wait_closed() == (4408, "too slow: send queue full")


async def test_a_bulk_change_is_one_refresh_frame():
    client = Peer(user_id=1, queue_size=10)
    client.remember(3, 0)
    client.apply([Delivery(1, "bulk", 0, 0, 0, 0, counts(0), items=5000)])
    assert frames_of(client) == [{"type": "refresh", "items": 5000}, counts_frame(0)]
    assert not client.shown  # what it knew is stale now


async def test_client_backfill_tells_only_what_changed():
    client = Peer(user_id=1, queue_size=10)
    client.last_position = 3
    client.counts = counts(2)
    for item_id, state in ((1, SEEN | READ), (2, DELETED), (3, 0)):
        client.remember(item_id, state)
    restored = {
        "id": 2,
        "notification_id": 2,
        "tag": 1,
        "tag_name": "t",
        "message": "back",
        "data": {},
        "timestamp": None,
        "position": 2,
        **UNTOUCHED,
    }
    item4 = restored | {"id": 4, "notification_id": 4, "message": "four", "position": 4}
    client.backfill(
        items=[item4],
        states={1: SEEN | READ, 2: 0},  # 3 removed outright
        current={2: restored},
        counts=counts(2),
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
    pool = await create_pool(db_url, 4)

    async def no_barrier(pool) -> bool:
        return False

    hub = Hub(pool, settings, barrier=no_barrier, on_failure=lambda: None)
    hub.start()
    listening = await connect(db_url)
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
    client = Peer(alice.id, 10)
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
    assert frames[-1] == {"type": "counts", "unseen": 3, "unread": 3, "total": 3, "archived": 0}
