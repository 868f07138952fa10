"""Inbox keys without per-row foreign keys (sql/triggers.sql, "Inbox keys"):
no inbox row can name a missing user or notification, whatever the isolation
level of the transactions that race to make one.

Each race runs on connections of its own, both at the isolation level under
test, in both orders: the inserter first (the deleter must wait for it, then
either remove its rows or fail to serialize) and the deleter first (the
inserter must wait, then fail).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from citelink.db.connection import connect
from tests.support.data import add_users, publish, subscribe
from tests.support.waiting import waits_for

ISOLATION = ["read_committed", "repeatable_read", "serializable"]
# What a transaction may be refused with when it loses such a race.
REFUSED = (asyncpg.ForeignKeyViolationError, asyncpg.SerializationError)
DIRECT = "INSERT INTO user_notification (user_id, notification_id) VALUES ($1, $2)"


@pytest.fixture
async def two(db_url: str):
    """Two more connections to the test database."""
    pair = [await connect(db_url), await connect(db_url)]
    yield pair
    for connection in pair:
        await connection.close()


async def orphans(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM user_notification AS i "
        "WHERE NOT EXISTS (SELECT FROM users AS u WHERE u.id = i.user_id) "
        "OR NOT EXISTS (SELECT FROM notification AS n WHERE n.id = i.notification_id)"
    )


async def counters_match(conn: asyncpg.Connection) -> bool:
    """inbox_count equals a recount of the inbox."""
    return await conn.fetchval(
        "SELECT coalesce(bool_and(c.unread = r.unread AND c.total = r.total), true) "
        "FROM inbox_count AS c "
        "JOIN LATERAL (SELECT count(*) FILTER (WHERE NOT is_read AND NOT is_deleted) AS unread, "
        "count(*) FILTER (WHERE NOT is_deleted) AS total FROM user_notification "
        "WHERE user_id = c.user_id) AS r ON true"
    )


async def world(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """(alice, a tag she is subscribed to, a notification with no recipient)."""
    (alice,) = await add_users(conn, "alice")
    tag = await subscribe(conn, alice, "news")
    empty = await conn.fetchval("INSERT INTO tag (name) VALUES ('empty') RETURNING id")
    return alice, tag, await publish(conn, empty, "nobody's")


@pytest.mark.parametrize("isolation", ISOLATION)
@pytest.mark.parametrize("target", ["user", "notification"])
async def test_insert_naming_a_row_deleted_and_committed_since_its_snapshot(
    conn, two, isolation, target
):
    """The case a statement-snapshot check let through: the inserter's snapshot
    still shows the row, a concurrent transaction deletes it and commits."""
    alice, _, note = await world(conn)
    inserter, deleter = two
    async with inserter.transaction(isolation=isolation):
        await inserter.fetchval("SELECT count(*) FROM users")  # take the snapshot
        if target == "user":
            await deleter.execute("DELETE FROM users WHERE id = $1", alice)
        else:
            await deleter.execute("DELETE FROM notification WHERE id = $1", note)
        with pytest.raises(REFUSED):
            await inserter.execute(DIRECT, alice, note)
    assert await orphans(conn) == 0


@pytest.mark.parametrize("isolation", ISOLATION)
@pytest.mark.parametrize("target", ["user", "notification"])
async def test_a_delete_waits_for_an_open_insert(conn, two, isolation, target):
    """The inserter goes first and holds its transaction open: the delete waits
    for it. Then, under READ COMMITTED, the delete removes the new row too;
    under REPEATABLE READ and SERIALIZABLE it fails to serialize and the row
    stays with its user and notification."""
    alice, _, note = await world(conn)
    inserter, deleter = two
    insert = inserter.transaction(isolation=isolation)
    await insert.start()
    await inserter.execute(DIRECT, alice, note)
    delete = deleter.transaction(isolation=isolation)
    await delete.start()
    await deleter.fetchval("SELECT 1")
    table = "users" if target == "user" else "notification"
    row = alice if target == "user" else note
    deleting = asyncio.create_task(deleter.execute(f"DELETE FROM {table} WHERE id = $1", row))
    await waits_for(conn, deleter, inserter)
    await insert.commit()
    if isolation == "read_committed":
        await deleting
        await delete.commit()
        assert await conn.fetchval("SELECT count(*) FROM user_notification") == 0
    else:
        with pytest.raises(asyncpg.SerializationError):
            await deleting
        await delete.rollback()
        assert await conn.fetchval("SELECT count(*) FROM user_notification") == 1
    assert await orphans(conn) == 0
    assert await counters_match(conn)


@pytest.mark.parametrize("isolation", ISOLATION)
@pytest.mark.parametrize("target", ["user", "notification"])
async def test_an_insert_waits_for_an_open_delete_and_fails(conn, two, isolation, target):
    alice, _, note = await world(conn)
    inserter, deleter = two
    delete = deleter.transaction(isolation=isolation)
    await delete.start()
    table = "users" if target == "user" else "notification"
    await deleter.execute(f"DELETE FROM {table} WHERE id = $1", alice if target == "user" else note)
    insert = inserter.transaction(isolation=isolation)
    await insert.start()
    await inserter.fetchval("SELECT 1")
    inserting = asyncio.create_task(inserter.execute(DIRECT, alice, note))
    await waits_for(conn, inserter, deleter)
    await delete.commit()
    with pytest.raises(REFUSED):
        await inserting
    await insert.rollback()
    assert await orphans(conn) == 0


@pytest.mark.parametrize("isolation", ISOLATION)
async def test_deleting_a_user_while_a_fan_out_to_them_is_open(conn, two, isolation):
    """The fan-out holds the user's counter row: the user's deletion waits, then
    removes the new item (READ COMMITTED) or fails to serialize."""
    alice, tag, _ = await world(conn)
    publisher, deleter = two
    fan_out = publisher.transaction(isolation=isolation)
    await fan_out.start()
    await publish(publisher, tag, "open")
    delete = deleter.transaction(isolation=isolation)
    await delete.start()
    await deleter.fetchval("SELECT 1")
    deleting = asyncio.create_task(deleter.execute("DELETE FROM users WHERE id = $1", alice))
    await waits_for(conn, deleter, publisher)
    await fan_out.commit()
    if isolation == "read_committed":
        await deleting
        await delete.commit()
        assert await conn.fetchval("SELECT count(*) FROM user_notification") == 0
    else:
        with pytest.raises(asyncpg.SerializationError):
            await deleting
        await delete.rollback()
    assert await orphans(conn) == 0
    assert await counters_match(conn)


@pytest.mark.parametrize("isolation", ISOLATION)
async def test_a_fan_out_to_a_user_being_deleted_fails_whole(conn, two, isolation):
    """The user's deletion goes first: the fan-out that still saw them as a
    subscriber waits for it, then fails as a whole (nobody gets the item; the
    API publishes again, see citelink.api.notifications)."""
    alice, tag, _ = await world(conn)
    (bob,) = await add_users(conn, "bob")
    await subscribe(conn, bob, "news")
    publisher, deleter = two
    delete = deleter.transaction(isolation=isolation)
    await delete.start()
    await deleter.execute("DELETE FROM users WHERE id = $1", alice)
    fan_out = publisher.transaction(isolation=isolation)
    await fan_out.start()
    await publisher.fetchval("SELECT count(*) FROM subscription")  # alice still in it
    publishing = asyncio.create_task(publish(publisher, tag, "racing"))
    await waits_for(conn, publisher, deleter)
    await delete.commit()
    with pytest.raises(REFUSED):
        await publishing
    await fan_out.rollback()
    assert await conn.fetchval("SELECT count(*) FROM user_notification") == 0
    assert await orphans(conn) == 0


async def test_truncating_users_or_notifications_empties_the_inbox(conn):
    alice, tag, _ = await world(conn)
    await publish(conn, tag, "one")
    await conn.execute("TRUNCATE notification CASCADE")
    assert await conn.fetchval("SELECT count(*) FROM user_notification") == 0
    await publish(conn, await subscribe(conn, alice, "again"), "two")
    await conn.execute("TRUNCATE users CASCADE")
    assert await conn.fetchval("SELECT count(*) FROM user_notification") == 0
