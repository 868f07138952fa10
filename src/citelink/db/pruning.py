"""Background pruning: audit rows past `CITELINK_AUDIT_RETENTION_DAYS` (none
when it is 0, the default) and refresh token families that have expired.

Each batch is one short statement over at most `batch_rows` rows, with a
pause after it, so a long backlog never holds locks for long nor crowds out
the requests. The audit log is walked by id, oldest first (ids follow time,
give or take a transaction), up to the first batch with nothing old enough:
no index on time is needed. A pass runs when the app starts and every
`interval` seconds. Several processes may prune at once: each row goes
once, whoever gets it.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from citelink.db.connection import UNAVAILABLE
from citelink.db.queries import Q
from citelink.settings import Settings

log = logging.getLogger("citelink.db.pruning")

BATCH_ROWS = 1000
# After each full batch, so that other statements get their turn.
PAUSE_SECONDS = 0.1
INTERVAL_SECONDS = 3600.0


class Pruner:
    """Prunes in the background while the app runs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        batch_rows: int = BATCH_ROWS,
        interval: float = INTERVAL_SECONDS,
    ):
        self._pool = pool
        self._retention_days = settings.audit_retention_days
        self._batch_rows = batch_rows
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="citelink-pruning")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def prune(self) -> dict[str, int]:
        """One pass: the rows deleted, by table."""
        pruned = {"refresh_token_family": await self._families()}
        if self._retention_days:
            pruned["audit_log"] = await self._audit_log()
        return pruned

    async def _families(self) -> int:
        total = batches = 0
        while True:
            deleted: int = await self._pool.fetchval(Q.prune_refresh_families, self._batch_rows)
            total, batches = total + deleted, batches + 1
            if deleted < self._batch_rows:
                break
            await asyncio.sleep(PAUSE_SECONDS)
        self._report(total, "expired refresh token families", batches)
        return total

    async def _audit_log(self) -> int:
        total = batches = after = 0
        while True:
            row = await self._pool.fetchrow(
                Q.prune_audit_log, self._retention_days, after, self._batch_rows
            )
            assert row is not None  # an aggregate: one row, even of an empty batch
            deleted: int = row["deleted"]
            total, batches = total + deleted, batches + 1
            if not deleted or row["scanned"] < self._batch_rows:
                break
            after = row["last_id"]
            await asyncio.sleep(PAUSE_SECONDS)
        self._report(total, f"audit rows older than {self._retention_days} days", batches)
        return total

    @staticmethod
    def _report(total: int, what: str, batches: int) -> None:
        if total:
            log.info("pruned %d %s in %d batches", total, what, batches)

    async def _run(self) -> None:
        while True:
            try:
                await self.prune()
            except UNAVAILABLE as exc:
                log.warning("pruning postponed, database unavailable: %r", exc)
            except Exception:
                log.exception("pruning failed; trying again at the next pass")
            await asyncio.sleep(self._interval)
