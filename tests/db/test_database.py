"""The database does the work: fan-out, counters, events and audit, by plain SQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from citelink.db.connection import connect
from citelink.settings import MESSAGE_CHARS_BOUND
from tests.support.data import Partial, add_users, publish, recipients_of, subscribe


class Events:
    """LISTEN on the events channel from a connection of its own."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def __call__(self, conn, pid, channel, payload) -> None:
        self.queue.put_nowait(payload)

    async def take(self, count: int) -> list[str]:
        return [await asyncio.wait_for(self.queue.get(), 5) for _ in range(count)]

    def pending(self) -> list[str]:
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


@pytest.fixture
async def events(db_url: str):
    listener = await connect(db_url)
    received = Events()
    await listener.add_listener("citelink_events", received)
    yield received
    await listener.close()


async def inbox(conn: asyncpg.Connection, user_id: int) -> list[int]:
    return [
        r["notification_id"]
        for r in await conn.fetch(
            "SELECT notification_id FROM user_notification WHERE user_id = $1 ORDER BY id", user_id
        )
    ]


async def test_fan_out_reaches_only_subscribers(conn, events):
    alice, bob, carol = await add_users(conn, "alice", "bob", "carol")
    sports = await subscribe(conn, alice, "sports")
    await subscribe(conn, bob, "sports")
    await subscribe(conn, carol, "news")

    note = await publish(conn, sports)

    assert await inbox(conn, alice) == [note]
    assert await inbox(conn, bob) == [note]
    assert await inbox(conn, carol) == []
    received = await events.take(2)
    assert sorted(p.split()[:2] for p in received) == [["new", str(alice)], ["new", str(bob)]]
    assert {p.split()[3] for p in received} == {str(note)}
    assert events.pending() == []


async def test_later_subscriber_gets_nothing_retroactively(conn):
    alice, bob = await add_users(conn, "alice", "bob")
    sports = await subscribe(conn, alice, "sports")
    first = await publish(conn, sports, "first")
    await subscribe(conn, bob, "sports")
    second = await publish(conn, sports, "second")

    assert await inbox(conn, alice) == [first, second]
    assert await inbox(conn, bob) == [second]


async def test_unsubscribed_user_gets_nothing(conn):
    (alice,) = await add_users(conn, "alice")
    sports = await subscribe(conn, alice, "sports")
    await conn.execute("DELETE FROM subscription WHERE user_id = $1", alice)
    await publish(conn, sports)
    assert await inbox(conn, alice) == []


async def test_long_message_inserts_and_the_event_stays_small(conn, events):
    (alice,) = await add_users(conn, "alice")
    sports = await subscribe(conn, alice, "sports")
    # The longest message there may be: 100,000 characters, 200,002 bytes.
    message = "é" * 99_999 + "\U0001f600"

    note = await publish(conn, sports, message)

    (payload,) = await events.take(1)
    assert len(payload.encode()) < 100
    assert payload.split()[3] == str(note)
    assert await conn.fetchval("SELECT message FROM notification WHERE id = $1", note) == message


@pytest.mark.parametrize(
    "message", ["", "x" * (MESSAGE_CHARS_BOUND + 1)], ids=["empty", "one character too many"]
)
async def test_plain_sql_cannot_insert_a_message_the_api_refuses(conn, message):
    (alice,) = await add_users(conn, "alice")
    sports = await subscribe(conn, alice, "sports")
    with pytest.raises(asyncpg.CheckViolationError, match="notification_message_check"):
        await publish(conn, sports, message)
    assert await inbox(conn, alice) == []


async def test_read_unread_delete_emit_events_and_keep_counts(conn, events):
    (alice,) = await add_users(conn, "alice")
    sports = await subscribe(conn, alice, "sports")
    await publish(conn, sports, "one")
    await publish(conn, sports, "two")
    first, second = await conn.fetch("SELECT id FROM user_notification ORDER BY id")
    await events.take(2)

    async def change(sql: str, item: int) -> str:
        await conn.execute(sql, item)
        (payload,) = await events.take(1)
        return payload

    # <kind> <user> <item> <notification> <position> <old state> <new state>,
    # then the counts after: <unseen> <unread> <total> <archived>. Reading
    # makes the item seen (1 + 2), unreading leaves it seen (1).
    read = "UPDATE user_notification SET is_read = $2 WHERE id = $1"
    assert await change(read.replace("$2", "true"), first["id"]) == (
        f"change {alice} {first['id']} 1 1 0 3 1 1 2 0"
    )
    assert await change(read.replace("$2", "false"), first["id"]) == (
        f"change {alice} {first['id']} 1 1 3 1 1 2 2 0"
    )
    deleted = "UPDATE user_notification SET is_deleted = true WHERE id = $1"
    assert await change(deleted, second["id"]) == f"change {alice} {second['id']} 2 2 0 16 0 1 1 0"

    row = await conn.fetchrow(
        "SELECT is_deleted, deleted_at, read_at FROM user_notification WHERE id = $1",
        second["id"],
    )
    assert row["is_deleted"] and row["deleted_at"] is not None and row["read_at"] is None
    counts = await conn.fetchrow("SELECT unread, total FROM inbox_count WHERE user_id = $1", alice)
    assert dict(counts) == Partial(unread=1, total=1)

    # An update that changes neither flag is silent.
    await conn.execute("UPDATE user_notification SET is_read = is_read")
    await conn.execute("SELECT pg_notify('citelink_events', 'marker')")
    assert await events.take(1) == ["marker"]


async def test_hard_delete_fixes_counts_and_tells_the_owner(conn, events):
    (alice,) = await add_users(conn, "alice")
    sports = await subscribe(conn, alice, "sports")
    await publish(conn, sports)
    item = await conn.fetchval("SELECT id FROM user_notification")
    await events.take(1)

    await conn.execute("DELETE FROM user_notification WHERE id = $1", item)

    assert await events.take(1) == [f"remove {alice} {item} 1 1 0 0 0 0 0 0"]
    counts = await conn.fetchrow("SELECT unread, total FROM inbox_count WHERE user_id = $1", alice)
    assert dict(counts) == Partial(unread=0, total=0)


async def test_audit_with_and_without_actor(conn):
    alice, staff = await add_users(conn, "alice", "staff")
    sports = await subscribe(conn, alice, "sports")

    async with conn.transaction():
        await conn.execute("SELECT set_config('citelink.actor_id', $1, true)", str(staff))
        note = await publish(conn, sports, "audited")
    item = await conn.fetchval("SELECT id FROM user_notification")
    await conn.execute("UPDATE user_notification SET is_read = true WHERE id = $1", item)

    rows = await conn.fetch(
        "SELECT resource, object_id, action, changes, actor_id FROM audit_log ORDER BY id"
    )
    by_resource = {(r["resource"], r["action"]): r for r in rows}
    created = by_resource[("notification", "create")]
    assert created["object_id"] == note and created["actor_id"] == staff
    assert created["changes"]["message"] == [None, "audited"]
    assert created["changes"]["recipients"] == [None, 1]
    assert await recipients_of(conn, note) == 1
    # The fan-out's own update of the count is not audited again.
    assert ("notification", "update") not in by_resource
    # The fan-out is summarised: no audit row per inbox row created.
    assert ("user_notification", "create") not in by_resource
    read = by_resource[("user_notification", "update")]
    assert read["object_id"] == item and read["actor_id"] is None
    assert read["changes"]["is_read"] == [False, True]
    assert read["changes"]["read_at"][0] is None and read["changes"]["read_at"][1]
    assert by_resource[("tag", "create")]["changes"]["name"] == [None, "sports"]
    assert by_resource[("subscription", "create")]["changes"]["user_id"] == [None, alice]
    # The actor setting is per transaction: it does not leak to the next one.
    assert await conn.fetchval("SELECT citelink_actor_id()") is None


async def test_inbox_row_inserted_directly_is_audited_and_delivered(conn, events):
    (alice,) = await add_users(conn, "alice")
    tag = await conn.fetchval("INSERT INTO tag (name) VALUES ('t') RETURNING id")
    note = await publish(conn, tag)
    item = await conn.fetchval(
        "INSERT INTO user_notification (user_id, notification_id) VALUES ($1, $2) RETURNING id",
        alice,
        note,
    )
    assert await events.take(1) == [f"new {alice} {item} {note} 1 0 0 1 1 1 0"]
    # Counted as a recipient, numbered in the user's order, audited.
    assert await recipients_of(conn, note) == 1
    assert await conn.fetchval("SELECT position FROM user_notification WHERE id = $1", item) == 1
    actions = await conn.fetch(
        "SELECT action FROM audit_log WHERE resource = 'user_notification' AND object_id = $1",
        item,
    )
    assert [a["action"] for a in actions] == ["create"]


async def test_uniqueness_is_enforced(conn):
    (alice,) = await add_users(conn, "alice")
    with pytest.raises(asyncpg.UniqueViolationError):
        await add_users(conn, "ALICE")
    sports = await subscribe(conn, alice, "sports")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO subscription (user_id, tag_id) VALUES ($1, $2)", alice, sports
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO tag (name) VALUES ('sports')")
    note = await publish(conn, sports)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO user_notification (user_id, notification_id) VALUES ($1, $2)", alice, note
        )


async def test_inbox_keys_name_existing_rows(conn):
    (alice,) = await add_users(conn, "alice")
    sports = await subscribe(conn, alice, "sports")
    note = await publish(conn, sports)
    insert = "INSERT INTO user_notification (user_id, notification_id) VALUES ($1, $2)"
    (bob,) = await add_users(conn, "bob")

    # No such user: their counter row cannot be made (its foreign key).
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="inbox_count_user_id_fkey"):
        await conn.execute(insert, 10**9, note)
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="no such notification"):
        await conn.execute(insert, bob, 10**9)
    with pytest.raises(asyncpg.RestrictViolationError, match="cannot move"):
        await conn.execute("UPDATE user_notification SET user_id = $1", bob)
    with pytest.raises(asyncpg.RestrictViolationError, match="cannot move"):
        await conn.execute("UPDATE user_notification SET position = position + 1")

    rows = await conn.fetch("SELECT user_id, notification_id FROM user_notification")
    assert [tuple(r) for r in rows] == [(alice, note)]
    # Changing anything else is fine.
    await conn.execute("UPDATE user_notification SET is_read = true, user_id = user_id")


async def test_deleting_a_user_removes_all_their_inbox_rows(conn, events):
    alice, bob = await add_users(conn, "alice", "bob")
    sports = await subscribe(conn, alice, "sports")
    await subscribe(conn, bob, "sports")
    for message in ("one", "two", "three"):
        await publish(conn, sports, message)
    await events.take(6)
    # One of Alice's items is soft-deleted: it must go too.
    await conn.execute(
        "UPDATE user_notification SET is_deleted = true WHERE id = "
        "(SELECT min(id) FROM user_notification WHERE user_id = $1)",
        alice,
    )
    await events.take(1)

    await conn.execute("DELETE FROM users WHERE id = $1", alice)

    owners = await conn.fetch("SELECT DISTINCT user_id FROM user_notification")
    assert [r["user_id"] for r in owners] == [bob]
    assert await conn.fetchval("SELECT count(*) FROM user_notification") == 3
    received = await events.take(3)  # revoke, then her two visible items
    assert sorted(p.split()[0] for p in received) == ["remove", "remove", "revoke"]


async def test_deleting_a_notification_removes_its_inbox_rows(conn, events):
    alice, bob = await add_users(conn, "alice", "bob")
    sports = await subscribe(conn, alice, "sports")
    await subscribe(conn, bob, "sports")
    kept = await publish(conn, sports, "kept")
    gone = await publish(conn, sports, "gone")
    await events.take(4)

    await conn.execute("DELETE FROM notification WHERE id = $1", gone)

    left = await conn.fetch("SELECT DISTINCT notification_id FROM user_notification")
    assert [r["notification_id"] for r in left] == [kept]
    received = await events.take(2)
    assert sorted(p.split()[1] for p in received) == sorted([str(alice), str(bob)])
    assert {p.split()[0] for p in received} == {"remove"}
    counts = await conn.fetch("SELECT unread, total FROM inbox_count ORDER BY user_id")
    assert [tuple(c) for c in counts] == [(1, 1), (1, 1)]


# Slow (about 15 s); the linearity test below covers big statements in the default run.
@pytest.mark.slow
async def test_fan_out_to_100000_subscribers_commits(conn, events):
    await conn.execute(
        "INSERT INTO users (username, password_hash) SELECT 'u' || g, 'x' "
        "FROM generate_series(1, 100000) g"
    )
    tag = await conn.fetchval("INSERT INTO tag (name) VALUES ('everyone') RETURNING id")
    await conn.execute("INSERT INTO subscription (user_id, tag_id) SELECT id, $1 FROM users", tag)

    note = await publish(conn, tag, "x" * 10_000)

    assert (
        await conn.fetchval(
            "SELECT count(*) FROM user_notification WHERE notification_id = $1", note
        )
        == 100_000
    )
    assert await conn.fetchval("SELECT recipients FROM notification_recipients") == 100_000
    recipients = await conn.fetchval(
        "SELECT changes -> 'recipients' ->> 1 FROM audit_log WHERE resource = 'notification'"
    )
    assert recipients == "100000"
    # One event for all of them, not 100,000.
    assert await events.take(1) == [f"fanout {note} 100000"]
    await conn.execute("SELECT pg_notify('citelink_events', 'marker')")
    assert await events.take(1) == ["marker"]


async def test_big_statements_after_small_ones_stay_linear(conn):
    """PL/pgSQL plans a trigger's queries at their first call in a session, with
    that call's row counts: small statements first must not leave a plan that
    is quadratic for a big one (20,000 rows would then take minutes)."""
    await conn.execute("SET statement_timeout = '20s'")
    (alice,) = await add_users(conn, "alice")
    small = await subscribe(conn, alice, "small")
    await publish(conn, small)
    await conn.execute("UPDATE user_notification SET is_read = true WHERE user_id = $1", alice)
    await conn.execute("DELETE FROM user_notification WHERE user_id = $1", alice)
    await conn.execute(
        "INSERT INTO users (username, password_hash) SELECT 'u' || g, 'x' "
        "FROM generate_series(1, 20000) g"
    )
    big = await conn.fetchval("INSERT INTO tag (name) VALUES ('big') RETURNING id")
    await conn.execute("INSERT INTO subscription (user_id, tag_id) SELECT id, $1 FROM users", big)

    note = await publish(conn, big)
    await conn.execute(
        "UPDATE user_notification SET is_read = true WHERE notification_id = $1", note
    )
    unread, total = await conn.fetchrow("SELECT sum(unread), sum(total) FROM inbox_count")
    assert (unread, total) == (0, 20_001)
    await conn.execute("DELETE FROM user_notification WHERE notification_id = $1", note)

    assert await conn.fetchval("SELECT sum(total) FROM inbox_count") == 0
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'update'") == 20_002
    # One statement of 20,000 notifications (a batch job), after single ones.
    await conn.execute(
        "INSERT INTO notification (tag_id, message) SELECT $1, 'batch ' || g "
        "FROM generate_series(1, 20000) g",
        small,
    )
    assert await conn.fetchval(
        "SELECT last_position FROM inbox_count WHERE user_id = $1", alice
    ) == (20_000 + 2)
