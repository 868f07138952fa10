"""One lock order for every writer of a user's items (sql/triggers.sql, "Lock
order"): publishes (to a tag, to listed users, grouped), the app's item
changes and bulk actions, expiry, and plain SQL inserts and updates, all at
once on the same few users, find no deadlock -- none raised, none counted by
PostgreSQL -- and leave counters and positions right. A plain SQL writer runs
under each isolation level (its serialization failures are tried again, as
any client of SERIALIZABLE must)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from citelink.db import inbox_store
from citelink.db.connection import connect, create_pool
from citelink.db.scheduler import Scheduler
from tests.support.data import add_users, assert_counters_match, assert_gapless, subscribe

SECONDS = 3.0
ISOLATION = ["read_committed", "repeatable_read", "serializable"]
# What a writer may meet and try again: nothing else is allowed.
RETRIED = (
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
    # Two direct inserts of the same row: the second is refused.
    asyncpg.UniqueViolationError,
)


async def deadlocks(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )


@pytest.mark.parametrize("isolation", ISOLATION)
async def test_every_writer_at_once_finds_no_deadlock(conn, db_url, isolation, figure):
    users = await add_users(conn, *(f"u{k}" for k in range(8)))
    tag = None
    for user in users:
        tag = await subscribe(conn, user, "all")
    assert tag is not None
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'n' || g FROM generate_series(1, 30) g",
        tag,
    )
    before = await deadlocks(conn)
    pool = await create_pool(db_url, 8)
    scheduler = Scheduler(pool)
    stop = time.monotonic() + SECONDS
    done: Counter[str] = Counter()
    retried: Counter[str] = Counter()

    async def loop(name: str, work: Callable[[], Awaitable[object]]) -> None:
        while time.monotonic() < stop:
            try:
                await work()
                done[name] += 1
            except RETRIED:
                retried[name] += 1

    async def item_of(user: int) -> int:
        return await pool.fetchval(
            "SELECT id FROM user_notification WHERE user_id = $1 ORDER BY random() LIMIT 1", user
        )

    async def publish() -> None:
        listed = random.sample(users, 3)
        await pool.execute(
            "INSERT INTO notification (tag_id, users, message, expires_at) "
            "VALUES ($1, $2, 'p', now() + interval '50 milliseconds')",
            random.choice([tag, None]),
            listed,
        )

    async def grouped() -> None:
        await pool.execute(
            "INSERT INTO notification (tag_id, message, group_key) VALUES ($1, 'g', 'key')", tag
        )

    async def change() -> None:
        user = random.choice(users)
        state = random.choice(
            [
                {"is_read": True},
                {"is_read": False},
                {"is_seen": True},
                {"is_archived": True},
                {"is_archived": False},
            ]
        )
        await inbox_store.set_state(pool, user, await item_of(user), **state)

    async def bulk() -> None:
        user = random.choice(users[:3])
        await inbox_store.bulk(pool, user, random.choice(["read", "unread", "seen"]))

    async def expire() -> None:
        await scheduler.expire()

    plain = await connect(db_url)

    async def plain_update() -> None:
        # A plain SQL UPDATE of several users' items: items first, counters at the end.
        async with plain.transaction(isolation=isolation):
            await plain.execute(
                "UPDATE user_notification SET is_read = NOT is_read "
                "WHERE id IN (SELECT id FROM user_notification ORDER BY random() LIMIT 5)"
            )

    async def plain_insert() -> None:
        note = await plain.fetchval("SELECT max(id) FROM notification")
        async with plain.transaction(isolation=isolation):
            await plain.execute(
                "INSERT INTO user_notification (user_id, notification_id) "
                "SELECT u, $1 FROM unnest($2::bigint[]) AS u WHERE NOT EXISTS "
                "(SELECT FROM user_notification WHERE notification_id = $1 AND user_id = u) "
                "ORDER BY u",
                note,
                sorted(random.sample(users, 2)),
            )

    plain_work = [plain_update, plain_insert]

    async def plain_writer() -> None:
        await random.choice(plain_work)()

    try:
        await asyncio.gather(
            loop("publish", publish),
            loop("publish", publish),
            loop("grouped", grouped),
            loop("change", change),
            loop("change", change),
            loop("change", change),
            loop("bulk", bulk),
            loop("expire", expire),
            loop("plain SQL", plain_writer),
        )
    finally:
        await plain.close()
        await pool.close()
    await asyncio.sleep(1.0)  # statistics are flushed at most once a second
    assert await deadlocks(conn) == before
    assert all(done[name] > 0 for name in ("publish", "grouped", "change", "bulk", "plain SQL"))
    await assert_counters_match(conn)
    await assert_gapless(conn)
    figure(
        f"{isolation}: {sum(done.values())} writes in {SECONDS:g} s "
        f"({dict(done)}), tried again: {dict(retried)}, 0 deadlocks"
    )
