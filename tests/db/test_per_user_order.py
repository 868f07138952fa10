"""Per-user order: positions gapless and in commit order for each user, and no
lock wider than one user (sql/triggers.sql, "Per-user order").

Every test races real transactions on connections of their own and checks
who waited for whom with pg_blocking_pids().
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from citelink.db import connection
from tests.support.data import add_users, assert_gapless, publish, subscribe
from tests.support.waiting import blockers, waits_for

ISOLATION = ["read_committed", "repeatable_read", "serializable"]


@pytest.fixture
async def connect(db_url: str):
    """`await connect()`: another connection to the test database, closed after."""
    opened: list[asyncpg.Connection] = []

    async def make() -> asyncpg.Connection:
        opened.append(await connection.connect(db_url))
        return opened[-1]

    yield make
    for conn in opened:
        await conn.close()


async def positions(conn: asyncpg.Connection, user_id: int) -> list[tuple[int, str]]:
    """(position, message) of every item of the user, in their order."""
    rows = await conn.fetch(
        "SELECT i.position, n.message FROM user_notification i "
        "JOIN notification n ON n.id = i.notification_id WHERE i.user_id = $1 ORDER BY 1",
        user_id,
    )
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("isolation", ISOLATION)
async def test_an_open_transaction_holds_up_no_other_user(conn, connect, isolation):
    """An uncommitted notification on tag A (a psql session left open): a
    publish on tag B, whose subscriber is not A's, commits at once, and so do
    reads and counter changes of other users."""
    alice, bob = await add_users(conn, "alice", "bob")
    tag_a = await subscribe(conn, alice, "a")
    tag_b = await subscribe(conn, bob, "b")
    await publish(conn, tag_b, "bob's first")
    idle, writer = await connect(), await connect()

    async with idle.transaction(isolation=isolation):
        await publish(idle, tag_a, "uncommitted")
        async with asyncio.timeout(5):
            async with writer.transaction(isolation=isolation):
                await publish(writer, tag_b, "while A is open")
            await writer.execute(
                "UPDATE user_notification SET is_read = true WHERE user_id = $1", bob
            )
        assert await blockers(conn, writer) == []
        assert await positions(conn, bob) == [(1, "bob's first"), (2, "while A is open")]
        assert await positions(conn, alice) == []  # not committed yet

    assert await positions(conn, alice) == [(1, "uncommitted")]
    await assert_gapless(conn)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_second_writer_for_a_user_waits_and_numbers_after_the_first(conn, connect, outcome):
    """Carol is on both tags. The second publisher (a higher notification id,
    another tag) waits for the first's row lock on Carol's counter, not on
    anything of Alice's or Bob's: it then numbers after the first if it
    committed, or takes its place if it aborted (no hole)."""
    alice, bob, carol = await add_users(conn, "alice", "bob", "carol")
    tag_a = await subscribe(conn, alice, "a")
    await subscribe(conn, carol, "a")
    tag_b = await subscribe(conn, bob, "b")
    await subscribe(conn, carol, "b")
    first, second = await connect(), await connect()

    tx = first.transaction()
    await tx.start()
    first_note = await publish(first, tag_a, "first")
    late = asyncio.create_task(publish(second, tag_b, "second"))
    await waits_for(conn, second, first)
    assert await blockers(conn, second) == [first.get_server_pid()]
    assert not late.done()
    await (tx.commit() if outcome == "commit" else tx.rollback())
    second_note = await late
    assert second_note > first_note

    if outcome == "commit":
        assert await positions(conn, carol) == [(1, "first"), (2, "second")]
        assert await positions(conn, alice) == [(1, "first")]
    else:
        assert await positions(conn, carol) == [(1, "second")]
        assert await positions(conn, alice) == []
    assert await positions(conn, bob) == [(1, "second")]
    await assert_gapless(conn)


async def test_a_waiting_repeatable_read_writer_fails_to_serialize(conn, connect):
    """Under REPEATABLE READ the waiting writer cannot number after a commit
    it does not see: PostgreSQL refuses it (retry), and nothing is half done."""
    (carol,) = await add_users(conn, "carol")
    tag = await subscribe(conn, carol, "a")
    await publish(conn, tag, "before")
    first, second = await connect(), await connect()

    tx = first.transaction()
    await tx.start()
    await publish(first, tag, "first")
    snapshot = second.transaction(isolation="repeatable_read")
    await snapshot.start()
    await second.fetchval("SELECT 1")
    late = asyncio.create_task(publish(second, tag, "second"))
    await waits_for(conn, second, first)
    await tx.commit()
    with pytest.raises(asyncpg.SerializationError):
        await late
    await snapshot.rollback()
    assert await positions(conn, carol) == [(1, "before"), (2, "first")]
    await assert_gapless(conn)


async def test_an_aborted_fan_out_leaves_no_gap(conn):
    alice, bob = await add_users(conn, "alice", "bob")
    tag = await subscribe(conn, alice, "news")
    await subscribe(conn, bob, "news")
    await publish(conn, tag, "one")
    with pytest.raises(asyncpg.RaiseError):
        async with conn.transaction():
            await publish(conn, tag, "aborted")
            await conn.execute("DO $$ BEGIN RAISE 'give up'; END $$")
    await publish(conn, tag, "two")
    for user in (alice, bob):
        assert await positions(conn, user) == [(1, "one"), (2, "two")]
    await assert_gapless(conn)


async def test_overlapping_fan_outs_in_any_order_never_deadlock(conn, connect):
    """Two publishers fan out, again and again, to tags sharing most of their
    subscribers, one of them two notifications per statement: the counter
    rows are always locked in user id order, so neither ever waits for the
    other in a cycle (PostgreSQL would abort one with a deadlock after 1 s)."""
    await conn.execute(
        "INSERT INTO users (username, password_hash) SELECT 'u' || g, 'x' "
        "FROM generate_series(1, 600) g"
    )
    tags = [
        await conn.fetchval("INSERT INTO tag (name) VALUES ($1) RETURNING id", name)
        for name in ("low", "high", "all")
    ]
    await conn.execute(
        "INSERT INTO subscription (user_id, tag_id) "
        "SELECT id, $1::bigint FROM users WHERE id <= 400 "
        "UNION ALL SELECT id, $2::bigint FROM users WHERE id > 200 "
        "UNION ALL SELECT id, $3::bigint FROM users",
        *tags,
    )
    await conn.execute("SET deadlock_timeout = '100ms'")
    left, right = await connect(), await connect()
    for each in (left, right):
        await each.execute("SET deadlock_timeout = '100ms'")

    async def one(connection: asyncpg.Connection, tag: int) -> None:
        await publish(connection, tag, "single")

    async def two(connection: asyncpg.Connection) -> None:
        await connection.execute(
            "INSERT INTO notification (tag_id, message) VALUES ($1, 'pair'), ($2, 'pair')",
            tags[1],
            tags[0],
        )

    for _ in range(15):
        await asyncio.gather(one(left, tags[2]), two(right))
        await asyncio.gather(two(left), one(right, tags[0]), one(conn, tags[1]))

    counts = await conn.fetch("SELECT last_position FROM inbox_count ORDER BY user_id")
    # Users 201-400 are on all three tags: 15 * (1 + 2 + 2 + 1 + 1) items.
    assert len(counts) == 600 and counts[300]["last_position"] == 15 * 7
    await assert_gapless(conn)


async def test_cursors_are_item_ids_placed_in_the_owners_order(conn):
    """An item of the user stands for its position; any other id (another
    user's item, a deleted row, a made-up number) for the point just after the
    user's newest item with a smaller id."""
    alice, bob = await add_users(conn, "alice", "bob")
    mine = await subscribe(conn, alice, "mine")
    theirs = await subscribe(conn, bob, "theirs")
    ids = []
    for message in ("a1", "b1", "a2", "b2", "a3"):
        await publish(conn, mine if message.startswith("a") else theirs, message)
        ids.append(await conn.fetchval("SELECT max(id) FROM user_notification"))
    _, b1, a2, b2, a3 = ids

    async def bounds(item: int) -> tuple[int, int]:
        return tuple(
            await conn.fetchrow(
                "SELECT citelink_position_before($1, $2), citelink_position_after($1, $2)",
                alice,
                item,
            )
        )

    assert await bounds(a2) == (2, 2)
    assert await bounds(b1) == (2, 1)  # between a1 and a2
    assert await bounds(b2) == (3, 2)
    assert await bounds(0) == (0, 0)
    assert await bounds(a3 + 1000) == (4, 3)
    # A deleted row of hers still stands for its own place.
    await conn.execute("UPDATE user_notification SET is_deleted = true WHERE id = $1", a2)
    assert await bounds(a2) == (2, 2)
    await conn.execute("DELETE FROM user_notification WHERE id = $1", a2)
    assert await bounds(a2) == (2, 1)
