"""Background pruning: audit rows past CITELINK_AUDIT_RETENTION_DAYS (off by
default), expired refresh token families; in batches, by the app."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import asyncpg

from citelink.db.connection import create_pool
from citelink.db.pruning import Pruner
from tests.support.world import World
from tests.support.wsclient import serving

OLD_AUDIT_ROWS = (
    "INSERT INTO audit_log (created_at, resource, object_id, action, changes) "
    "SELECT now() - make_interval(days => $1), 'tag', n, 'update', '{}' "
    "FROM generate_series(1, $2) AS n"
)
FAMILY = (
    "INSERT INTO refresh_token_family (user_id, jti, expires_at) "
    "VALUES ($1, 'j', now() + make_interval(mins => $2)) RETURNING id"
)


async def audit_ages(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        r["age"]: r["rows"]
        for r in await conn.fetch(
            "SELECT CASE WHEN created_at < now() - interval '7 days' THEN 'old' ELSE 'recent' END"
            " AS age, count(*) AS rows FROM audit_log GROUP BY 1"
        )
    }


async def test_old_audit_rows_are_pruned_in_batches(settings, conn, db_url, world: World, caplog):
    recent = (await audit_ages(conn))["recent"]  # what building the world wrote
    await conn.execute(OLD_AUDIT_ROWS, 10, 2500)
    await conn.execute(OLD_AUDIT_ROWS, 6, 10)  # not old enough
    expired = await conn.fetchval(FAMILY, world.alice.id, -1)
    live = await conn.fetchval(FAMILY, world.alice.id, 60)
    pool = await create_pool(db_url, 2)
    try:
        pruner = Pruner(
            pool, dataclasses.replace(settings, audit_retention_days=7), batch_rows=1000
        )
        with caplog.at_level(logging.INFO, "citelink.db.pruning"):
            assert await pruner.prune() == {"audit_log": 2500, "refresh_token_family": 1}
        assert "pruned 2500 audit rows older than 7 days in 3 batches" in caplog.messages
        assert await pruner.prune() == {"audit_log": 0, "refresh_token_family": 0}
    finally:
        await pool.close()
    assert await audit_ages(conn) == {"recent": recent + 10}
    families = {r["id"] for r in await conn.fetch("SELECT id FROM refresh_token_family")}
    assert families == {live} and expired not in families


async def test_the_app_prunes_in_the_background(settings, conn, world: World):
    await conn.execute(OLD_AUDIT_ROWS, 30, 50)
    await conn.fetchval(FAMILY, world.alice.id, -1)
    async with serving(settings, audit_retention_days=7):
        for _ in range(100):
            if "old" not in await audit_ages(conn):
                break
            await asyncio.sleep(0.05)
        assert "old" not in await audit_ages(conn)
    assert await conn.fetchval("SELECT count(*) FROM refresh_token_family") == 0


async def test_audit_rows_are_kept_by_default(settings, conn, world: World):
    await conn.execute(OLD_AUDIT_ROWS, 3650, 50)
    await conn.fetchval(FAMILY, world.alice.id, -1)
    async with serving(settings):
        # The start-up pass has run once expired families are gone.
        for _ in range(100):
            if not await conn.fetchval("SELECT count(*) FROM refresh_token_family"):
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT count(*) FROM refresh_token_family") == 0
    assert (await audit_ages(conn))["old"] == 50
