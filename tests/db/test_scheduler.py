"""The scheduler isolates failures (citelink/db/scheduler.py, sql/triggers.sql
"Schedules"): a notification whose fan-out fails, or runs past the statement
timeout, is marked failed and tried again with backoff while the others due
with it are delivered; delivery and expiry never wait for each other; a row
held elsewhere makes it sleep, not spin; two schedulers deliver each
notification once.

Fan-outs are made to fail or stall in the test's database only: a CHECK
constraint that refuses one notification's inbox rows, or a trigger that
sleeps in them. Notifications are made due at once with
`send_at = clock_timestamp()` (later than the inserting transaction's now(),
so it is scheduled, not delivered on insert).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from citelink.db.connection import connect, create_pool
from citelink.db.scheduler import Scheduler
from tests.support.data import add_users, recipients_and_items
from tests.support.waiting import wait_until
from tests.support.world import World
from tests.support.wsclient import logged

DUE = (
    "INSERT INTO notification (tag_id, users, message, send_at) "
    "VALUES ($1, $2, $3, clock_timestamp()) RETURNING id"
)
NOTE = (
    "SELECT delivered_at, delivery_attempts, delivery_error, retry_at = 'infinity' AS given_up, "
    "(SELECT coalesce(sum(recipients), 0) FROM notification_recipients "
    "WHERE notification_id = n.id) AS recipients, "
    "(SELECT count(*) FROM user_notification WHERE notification_id = n.id) AS items "
    "FROM notification AS n WHERE id = $1"
)
# The last failure of a notification: its audit row, and the delay it set
# (the audit row's time is the failing transaction's now(), as retry_at's base).
LAST_FAILURE = (
    "SELECT a.changes, a.actor_id, CASE WHEN n.retry_at <> 'infinity' "
    "THEN extract(epoch FROM n.retry_at - a.created_at)::float8 END AS delay "
    "FROM notification AS n CROSS JOIN LATERAL (SELECT * FROM audit_log WHERE "
    "resource = 'notification' AND object_id = n.id AND action = 'update' "
    "AND changes ? 'delivery_error' ORDER BY id DESC LIMIT 1) AS a WHERE n.id = $1"
)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url, 4)
    yield pool
    await pool.close()


async def refuse_items_of(conn: asyncpg.Connection, note: int) -> None:
    """Inbox rows of `note` fail from now on (its fan-out fails)."""
    await conn.execute(
        "ALTER TABLE user_notification ADD CONSTRAINT test_refused "
        f"CHECK (notification_id <> {int(note)}) NOT VALID"
    )


async def refuse_expiry_of(conn: asyncpg.Connection, note: int) -> None:
    """Marking the items of `note` expired fails from now on."""
    await conn.execute(
        "ALTER TABLE user_notification ADD CONSTRAINT test_refused "
        f"CHECK (NOT is_expired OR notification_id <> {int(note)}) NOT VALID"
    )


async def stall(conn: asyncpg.Connection, note: int, seconds: float, *, expiry: bool) -> None:
    """Inserting (or, `expiry`, marking expired) an item of `note` sleeps `seconds`."""
    await conn.execute(
        "CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(TG_ARGV[0]::float8); RETURN NEW; END $$"
    )
    event, when = ("INSERT", "") if not expiry else ("UPDATE", " AND NEW.is_expired")
    await conn.execute(
        f"CREATE TRIGGER test_stall BEFORE {event} ON user_notification FOR EACH ROW "
        f"WHEN (NEW.notification_id = {int(note)}{when}) "
        f"EXECUTE FUNCTION test_stall('{float(seconds)}')"
    )


async def sleeping(conn: asyncpg.Connection) -> bool:
    """Whether a statement of the scheduler is in the stall's pg_sleep."""
    return await conn.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event = 'PgSleep'"
    )


async def test_a_failing_fan_out_is_marked_failed_and_the_others_are_delivered(
    pool, conn, world: World, caplog
):
    """Five notifications due with one whose fan-out fails: one deliver() round
    delivers the five and marks the sixth failed, with its error, audited and
    due again after 5 s ±25 %; each retry doubles the delay, the tenth failure
    gives it up; the documented retry by hand delivers it once it can be."""
    (carol,) = await add_users(conn, "carol")
    good = [await conn.fetchval(DUE, world.news, None, f"good {n}") for n in range(5)]
    bad = await conn.fetchval(DUE, None, [carol], "bad")
    await refuse_items_of(conn, bad)
    scheduler = Scheduler(pool)

    assert await scheduler.deliver() == (6, 5)
    for note in good:
        row = await conn.fetchrow(NOTE, note)
        assert row["delivered_at"] is not None and (row["recipients"], row["items"]) == (2, 2)
    row = await conn.fetchrow(NOTE, bad)
    assert row["delivered_at"] is None and row["items"] == 0
    assert row["delivery_attempts"] == 1 and "test_refused" in row["delivery_error"]
    failure = await conn.fetchrow(LAST_FAILURE, bad)
    assert sorted(failure["changes"]) == ["delivery_attempts", "delivery_error", "retry_at"]
    assert failure["actor_id"] is None
    assert 3.75 <= failure["delay"] <= 6.25
    assert f"scheduled notification {bad} could not be delivered" in caplog.text
    # Not due again before retry_at.
    assert await scheduler.deliver() == (0, 0)

    for attempt in range(2, 11):
        await conn.execute("UPDATE notification SET retry_at = now() WHERE id = $1", bad)
        assert await scheduler.deliver() == (1, 0)
        row, failure = await conn.fetchrow(NOTE, bad), await conn.fetchrow(LAST_FAILURE, bad)
        assert row["delivery_attempts"] == attempt
        if attempt < 10:
            base = min(3600, 5 * 2 ** (attempt - 1))
            assert 0.75 * base - 0.001 <= failure["delay"] <= 1.25 * base + 0.001, attempt
            assert not row["given_up"]
        else:
            assert row["given_up"] and failure["delay"] is None
    assert await scheduler.deliver() == (0, 0)

    await conn.execute("ALTER TABLE user_notification DROP CONSTRAINT test_refused")
    await conn.execute(
        "UPDATE notification SET retry_at = now(), delivery_attempts = 0 WHERE id = $1", bad
    )
    assert await scheduler.deliver() == (1, 1)
    row = await conn.fetchrow(NOTE, bad)
    assert row["delivered_at"] is not None and row["delivery_error"] is None
    assert (row["recipients"], row["items"]) == (1, 1)
    assert await conn.fetchval("SELECT retry_at FROM notification WHERE id = $1", bad) is None


@pytest.mark.parametrize("broken", ["delivery", "expiry"])
@pytest.mark.parametrize("how", ["error", "stall"])
async def test_delivery_and_expiry_never_wait_for_each_other(pool, conn, world: World, broken, how):
    """One loop's notification fails (or stalls in its statement for 30 s);
    the other loop's work is done meanwhile. Their recipients differ (a
    stalled statement holds its recipients' counter rows, as any writer of
    theirs does)."""
    (carol,) = await add_users(conn, "carol")
    if broken == "delivery":
        stuck = await conn.fetchval(
            "INSERT INTO notification (users, message, send_at) "
            "VALUES ($1, 'stuck', now() + interval '1 hour') RETURNING id",
            [carol],
        )
    else:  # delivered to alice alone, expiring
        stuck = await conn.fetchval(
            "INSERT INTO notification (tag_id, message, expires_at) "
            "VALUES ($1, 'stuck', now() + interval '1 hour') RETURNING id",
            world.private,
        )
    if how == "error":
        await (refuse_items_of if broken == "delivery" else refuse_expiry_of)(conn, stuck)
    else:
        await stall(conn, stuck, 30, expiry=broken == "expiry")
    scheduler = Scheduler(pool)
    scheduler.start()
    try:
        column = "send_at" if broken == "delivery" else "expires_at"
        with logged("citelink.db.scheduler", f"notification {stuck} could not be") as failed:
            await conn.execute(
                f"UPDATE notification SET {column} = clock_timestamp() WHERE id = $1", stuck
            )
            if how == "error":
                await asyncio.wait_for(failed.wait(), 10)
            else:
                await wait_until(lambda: sleeping(conn), within=10)

        if broken == "delivery":  # the news (alice's and bob's items) expires
            other = world.news_note
            await conn.execute(
                "UPDATE notification SET expires_at = clock_timestamp() WHERE id = $1", other
            )
            done = "SELECT expired_at IS NOT NULL FROM notification WHERE id = $1"
        else:
            other = await conn.fetchval(DUE, None, [world.bob.id], "other")
            done = "SELECT delivered_at IS NOT NULL FROM notification WHERE id = $1"
        await wait_until(lambda: conn.fetchval(done, other), within=10)
        if how == "stall":
            assert await sleeping(conn)
        row = await conn.fetchrow(
            "SELECT delivered_at, delivery_error, expired_at FROM notification WHERE id = $1",
            stuck,
        )
        if broken == "delivery":
            assert row["delivered_at"] is None
            assert (row["delivery_error"] is not None) == (how == "error")
        else:
            assert row["expired_at"] is None
    finally:
        await scheduler.stop()


@pytest.mark.parametrize("why", ["slow", "locked"])
async def test_a_batch_past_the_statement_timeout_is_cut(
    db_url, pool, conn, world: World, figure, why
):
    """40 small notifications to bob due with one to alice whose fan-out
    takes 5 s (or waits for alice's inbox, locked by a transaction left
    open), the statement timeout 0.5 s: the batch is cut until that one is
    alone; the 40 are delivered, it is marked failed."""
    await conn.execute(
        "INSERT INTO notification (users, message, send_at) "
        "SELECT $1, 'small ' || g, clock_timestamp() FROM generate_series(1, 40) AS g",
        [world.bob.id],
    )
    slow = await conn.fetchval(DUE, world.private, None, "slow")
    holder = await connect(db_url)
    try:
        if why == "slow":
            await stall(conn, slow, 5, expiry=False)
        else:
            await holder.execute("BEGIN")
            await holder.execute(
                "SELECT FROM inbox_count WHERE user_id = $1 FOR NO KEY UPDATE", world.alice.id
            )
        scheduler = Scheduler(pool, statement_seconds=0.5)
        started = time.monotonic()
        assert await scheduler.deliver() == (41, 40)
        elapsed = time.monotonic() - started
    finally:
        await holder.close()
    row = await conn.fetchrow(NOTE, slow)
    assert row["delivered_at"] is None and row["items"] == 0
    assert row["delivery_error"] == "did not finish within 0.5 s"
    assert not await sleeping(conn)  # the timed-out statements were cancelled
    counts = await conn.fetchval(
        "SELECT array_agg(DISTINCT r.recipients) FROM notification AS n "
        "JOIN notification_recipients AS r ON r.notification_id = n.id "
        "WHERE message LIKE 'small %' AND delivered_at IS NOT NULL HAVING count(*) = 40"
    )
    assert counts == [1]
    figure(f"41 due, one {why}, 0.5 s timeout: 40 delivered in {elapsed:.1f} s")


async def test_a_row_held_elsewhere_makes_the_scheduler_sleep_not_spin(
    db_url, pool, conn, world: World, figure
):
    """A due notification locked by another transaction (FOR UPDATE, left
    open), another due in an hour: the scheduler's transactions per second
    stay low; once the lock goes, the notification is delivered."""
    held = await conn.fetchval(DUE, world.news, None, "held")
    await conn.execute(
        "INSERT INTO notification (tag_id, message, send_at, expires_at) "
        "VALUES ($1, 'later', now() + interval '1 hour', now() + interval '2 hours')",
        world.news,
    )
    holder = await connect(db_url)
    scheduler = Scheduler(pool)
    try:
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute("SELECT FROM notification WHERE id = $1 FOR UPDATE", held)
        # This connection's transactions so far are counted before, not during.
        await conn.execute("SELECT pg_stat_force_next_flush()")
        scheduler.start()
        xacts = (
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        before, started = await conn.fetchval(xacts), time.monotonic()
        await asyncio.sleep(4)  # a measurement over time: nothing to await
        rate = (await conn.fetchval(xacts) - before) / (time.monotonic() - started)
        figure(f"{rate:.1f} transactions/s while a due row is held elsewhere")
        assert rate < 20
        delivered = "SELECT delivered_at IS NOT NULL FROM notification WHERE id = $1"
        assert not await conn.fetchval(delivered, held)
        await holder_tx.commit()
        await wait_until(lambda: conn.fetchval(delivered, held), within=5)
    finally:
        await scheduler.stop()
        await holder.close()


async def test_unknown_listed_users_are_refused_and_deleted_ones_skipped(pool, conn, world: World):
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await conn.execute(
            "INSERT INTO notification (users, message) VALUES ($1, 'to nobody')",
            [world.alice.id, 999_999, 999_998, 999_999],
        )
    assert str(refused.value) == (
        "notification.users names users that do not exist: 999998, 999999"
    )
    assert (refused.value.table_name, refused.value.column_name) == ("notification", "users")

    (carol,) = await add_users(conn, "carol")
    note = await conn.fetchval(DUE, None, [carol, world.bob.id], "to carol and bob")
    await conn.execute("DELETE FROM users WHERE id = $1", carol)
    assert await Scheduler(pool).deliver() == (1, 1)
    row = await conn.fetchrow(NOTE, note)
    assert row["delivered_at"] is not None and (row["recipients"], row["items"]) == (1, 1)
    assert (
        await conn.fetchval(
            "SELECT user_id FROM user_notification WHERE notification_id = $1", note
        )
        == world.bob.id
    )


async def test_two_schedulers_deliver_each_notification_once(db_url, pool, conn, world: World):
    """1,500 notifications due over half a second, two schedulers (pools of
    their own) racing for them: each is fanned out once, every user's
    positions stay gapless."""
    await conn.execute(
        "INSERT INTO notification (tag_id, message, send_at) "
        "SELECT $1, 'race ' || g, clock_timestamp() + g * interval '0.3 ms' "
        "FROM generate_series(1, 1500) AS g",
        world.news,
    )
    other_pool = await create_pool(db_url, 4)
    schedulers = [Scheduler(pool), Scheduler(other_pool)]
    for scheduler in schedulers:
        scheduler.start()
    try:
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 0 FROM notification WHERE delivered_at IS NULL"
            ),
            within=30,
        )
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        await other_pool.close()
    rows = await recipients_and_items(conn, "race %")
    assert len(rows) == 1500 and set(rows) == {(2, 2)}
    gaps = await conn.fetch(
        "SELECT c.user_id FROM inbox_count AS c JOIN user_notification AS i USING (user_id) "
        "GROUP BY c.user_id, c.last_position "
        "HAVING array_agg(i.position ORDER BY i.position) "
        "<> ARRAY(SELECT generate_series(1, c.last_position))"
    )
    assert gaps == []
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM user_notification WHERE user_id = $1", world.bob.id
        )
        == 1501
    )


async def test_staff_see_a_failed_delivery_while_the_others_are_delivered(
    client: httpx.AsyncClient, conn, world: World
):
    """Through the app's own scheduler: a scheduled notification whose fan-out
    fails is listed with ?status=failed, its error and next try; the others
    due with it are delivered."""
    staff = world.staff.headers
    later = {"tag": world.news, "send_at": "2999-01-01T00:00:00Z"}
    notes = [
        (await client.post("/api/notifications/", json={"message": m, **later}, headers=staff))
        for m in ("first", "bad", "last")
    ]
    first, bad, last = (r.json()["id"] for r in notes)
    assert {r.json()["status"] for r in notes} == {"scheduled"}
    await refuse_items_of(conn, bad)
    await conn.execute(
        "UPDATE notification SET send_at = now() WHERE id = ANY ($1)", [first, bad, last]
    )

    async def listed(status: str) -> list[dict]:
        r = await client.get(f"/api/notifications/?status={status}", headers=staff)
        return r.json()["results"]

    (failed,) = await wait_until(lambda: listed("failed"), within=10)
    assert failed["id"] == bad and failed["status"] == "failed"
    assert failed["delivered_at"] is None and failed["delivery_attempts"] == 1
    assert "test_refused" in failed["delivery_error"] and failed["retry_at"] is not None

    # Each is settled in its own transaction once the batch failed, in id
    # order: `last` comes after `bad` is marked.
    async def both_delivered() -> list[dict]:
        ones = await listed("delivered")
        return ones if {first, last} <= {n["id"] for n in ones} else []

    delivered = await wait_until(both_delivered, within=10)
    assert {n["status"] for n in delivered} == {"delivered"}
    assert await listed("scheduled") == []
    r = await client.get(f"/api/notifications/{bad}/", headers=staff)
    assert r.json() == failed
    r = await client.get(f"/api/audit/?resource=notification&object_id={bad}", headers=staff)
    (update,) = [
        e
        for e in r.json()["results"]
        if e["action"] == "update" and "delivery_error" in e["changes"]
    ]
    assert update["changes"]["delivery_attempts"] == [0, 1]
