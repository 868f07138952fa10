"""The work of one publish, counted by PostgreSQL itself: statements executed
(pg_stat_statements, nested ones included), function calls
(track_functions) and rows written per table. The common publish -- a tag of
ten subscribers, no group key -- must keep its short path: a change that adds
to it fails here until the expected counts change with it, on purpose.
Features add work only to the publishes that use them (grouping, schedules)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from citelink.db import embedded
from citelink.db.connection import connect
from citelink.db.migrations import migrate
from tests.support.data import add_users, subscribe
from tests.support.database import pg_ctl, start_postgres

# What one publish does, by plain SQL and through the API's citelink_publish.
COMMON = {
    # The INSERT; its trigger's look at new_rows; the one statement of the
    # common path and the two set_config around it; the tag's foreign key.
    "statements": 6,
    "functions": {"citelink_fan_out_notification": 1},
    "rows": {
        "audit_log": {"inserted": 1},
        "inbox_count": {"updated": 10},
        "notification": {"inserted": 1},
        "notification_recipients": {"inserted": 1},
        "user_notification": {"inserted": 10},
    },
}


@pytest.fixture(scope="module")
def counting_postgres() -> Iterator[str]:
    """A PostgreSQL of this module's own with pg_stat_statements loaded,
    migrated; its URL."""
    data = Path(tempfile.mkdtemp(prefix="citelink-work-"))
    pgdata = str(data / "pgdata")
    try:
        url = embedded.start(data, cleanup_mode=None)
        (data / "pgdata" / "postgresql.auto.conf").write_text(
            "shared_preload_libraries = 'pg_stat_statements'\n"
            "pg_stat_statements.track = 'all'\n"
            "track_functions = 'all'\n"
        )
        pg_ctl(pgdata, "-m", "fast", "stop")
        start_postgres(pgdata, pgdata)
        migrate(url)
        yield url
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(pgdata, "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


FUNCTIONS = "SELECT funcname, calls FROM pg_stat_xact_user_functions"
TABLES = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables"


async def work_of(conn: asyncpg.Connection, statement: str, *args: object) -> dict:
    """Statements, function calls and rows written by `statement` (what the
    backend counted before and after it, in one transaction: its counts not
    yet reported include earlier transactions')."""
    await conn.execute("SELECT pg_stat_statements_reset()")
    async with conn.transaction():
        functions = {f["funcname"]: f["calls"] for f in await conn.fetch(FUNCTIONS)}
        tables = {t["relname"]: tuple(t)[1:] for t in await conn.fetch(TABLES)}
        await conn.execute(statement, *args)
        called = {
            f["funcname"]: f["calls"] - functions.get(f["funcname"], 0)
            for f in await conn.fetch(FUNCTIONS)
        }
        rows = {}
        for t in await conn.fetch(TABLES):
            old = tables.get(t["relname"], (0, 0, 0))
            counted = zip(("inserted", "updated", "deleted"), tuple(t)[1:], old, strict=True)
            changed = {kind: now - then for kind, now, then in counted if now != then}
            if changed:
                rows[t["relname"]] = changed
    statements = await conn.fetchval(
        "SELECT sum(calls) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND query NOT LIKE '%pg_stat%' AND query NOT IN ('BEGIN', 'COMMIT')"
    )
    return {
        "statements": statements,
        "functions": {name: calls for name, calls in called.items() if calls},
        "rows": rows,
    }


@pytest.fixture
async def counted(counting_postgres: str):
    conn = await connect(counting_postgres)
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await conn.execute("TRUNCATE users, tag, notification, audit_log RESTART IDENTITY CASCADE")
    users = await add_users(conn, *(f"u{k}" for k in range(10)))
    tag = None
    for user in users:
        tag = await subscribe(conn, user, "ten")
    # Plans made, caches warm: what is counted is the steady state.
    for _ in range(3):
        await conn.execute("INSERT INTO notification (tag_id, message) VALUES ($1, 'warm')", tag)
    yield conn, tag, users
    await conn.close()


async def test_the_common_publish_does_this_much_and_no_more(counted):
    conn, tag, _ = counted
    work = await work_of(conn, "INSERT INTO notification (tag_id, message) VALUES ($1, 'x')", tag)
    # The statement itself, then what the triggers ran.
    assert work == COMMON


async def test_the_api_publish_adds_one_call_and_its_read_back(counted):
    conn, tag, _ = counted
    work = await work_of(
        conn,
        "SELECT (p.note).id, p.recipients FROM "
        "citelink_publish($1, NULL, 'x', '{}', NULL, NULL, NULL, NULL, NULL, NULL) AS p",
        tag,
    )
    assert work["functions"] == {**COMMON["functions"], "citelink_publish": 1}
    assert work["rows"] == COMMON["rows"]
    # citelink_publish's set_config, INSERT and read back of the count (with
    # an actor, created_by's foreign key is checked too).
    assert work["statements"] == COMMON["statements"] + 3


async def test_a_grouped_publish_pays_for_grouping_and_a_plain_one_does_not(counted):
    conn, tag, _ = counted
    insert = "INSERT INTO notification (tag_id, message, group_key) VALUES ($1, 'g', $2)"
    first = await work_of(conn, insert, tag, "key")
    assert {
        "citelink_group_notifications",
        "citelink_group_notification",
        "citelink_fan_out",
    } <= set(first["functions"])
    grouped = await work_of(conn, insert, tag, "key")
    # Ten items moved to the top, none made.
    assert grouped["rows"]["user_notification"] == {"updated": 10}
    assert grouped["rows"]["group_member"] == {"inserted": 20}
    plain = await work_of(conn, "INSERT INTO notification (tag_id, message) VALUES ($1, 'p')", tag)
    assert plain == COMMON


async def test_a_scheduled_publish_does_no_fan_out_until_due(counted):
    conn, tag, _ = counted
    work = await work_of(
        conn,
        "INSERT INTO notification (tag_id, message, send_at) "
        "VALUES ($1, 'later', now() + interval '1 hour')",
        tag,
    )
    assert "citelink_fan_out" not in work["functions"]
    assert work["rows"] == {"audit_log": {"inserted": 1}, "notification": {"inserted": 1}}
