"""The scheduler: fans out notifications whose `send_at` has come and marks
the items of those whose `expires_at` has passed, in every app process.

The database does the claiming (citelink_deliver_due / citelink_expire_due in
sql/triggers.sql: FOR UPDATE SKIP LOCKED, settled in the same transaction), so
any number of processes may run this loop at once and each notification is
delivered, and each expiry done, exactly once. The loop sleeps until the next
due time, at most `idle_seconds` (a notification scheduled meanwhile is then
seen), and backs off while the database is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg

from citelink.db.connection import ERRORS, UNAVAILABLE
from citelink.db.queries import Q

log = logging.getLogger("citelink.db.scheduler")

# Notifications claimed per transaction: a batch is one fan-out statement.
BATCH = 500


class Scheduler:
    """The loop of one process; `start` and `stop` it with the app."""

    def __init__(self, pool: asyncpg.Pool, *, idle_seconds: float = 1.0):
        self._pool = pool
        self._idle = idle_seconds
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="citelink-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.work()
                pause = await self._until_next()
                failing = False
            except UNAVAILABLE:
                # The listener says when the database goes and comes back.
                log.debug("scheduler: database unavailable; retrying", exc_info=True)
                pause = self._idle
            except ERRORS as exc:
                if not failing:
                    log.warning("scheduler failed (%r); retrying every %ss", exc, self._idle)
                failing = True
                pause = self._idle
            await asyncio.sleep(pause)

    async def work(self) -> int:
        """Deliver and expire whatever is due now; how many notifications."""
        done = 0
        for query in (Q.scheduler_deliver, Q.scheduler_expire):
            while True:
                count = await self._pool.fetchval(query, BATCH)
                done += count
                if count < BATCH:
                    break
        return done

    async def _until_next(self) -> float:
        """Seconds until the next send_at or expires_at, at most idle_seconds."""
        due = await self._pool.fetchval(Q.scheduler_next_due)
        if not isinstance(due, datetime):
            # None, or past what datetime holds (citelink.db.decoding): 'infinity'
            # or the year 10000 (a BC one was due, and delivered by work()).
            return self._idle
        return min(self._idle, max(0.0, (due - datetime.now(UTC)).total_seconds()))
