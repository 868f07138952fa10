"""The scheduler: fans out notifications whose `send_at` has come and marks the
items of those whose `expires_at` has passed, in every app process.

Two loops, delivery and expiry, so that neither ever waits for the other.
Each finds what is due, then settles it a batch per transaction
(citelink_deliver / citelink_expire in sql/triggers.sql claim with FOR UPDATE
SKIP LOCKED, so any number of processes may run them and each notification is
delivered, and each expiry done, exactly once). Batches are cut by their
recipients, so that none nears the statement timeout; a batch that fails
anyway -- an error, or past the timeout -- is tried again one notification
per transaction: the one that fails is marked failed with its error (tried
again later with backoff, see citelink_delivery_failed), or for an expiry
left to a later round, and the others of the batch go on. What another
process holds is skipped, and the loop then sleeps until the next due time
instead of trying it again at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from citelink.db.connection import ERRORS, UNAVAILABLE
from citelink.db.queries import Q

log = logging.getLogger("citelink.db.scheduler")

# Notifications settled per transaction: one fan-out statement for a batch,
# of at most this many recipients.
BATCH = 500
BATCH_RECIPIENTS = 50_000
# An expiry that failed alone is tried again by this process after this long.
EXPIRY_RETRY_SECONDS = 30.0
# Failures of the database itself, not of a batch: the loop waits them out.
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class Scheduler:
    """The loops of one process; `start` and `stop` them with the app.
    `statement_seconds` bounds each statement (a batch past it is settled
    again one notification per transaction)."""

    def __init__(
        self, pool: asyncpg.Pool, *, idle_seconds: float = 1.0, statement_seconds: float = 60.0
    ):
        self._pool = pool
        self._idle = idle_seconds
        self._timeout = statement_seconds
        self._tasks: list[asyncio.Task[None]] = []
        # Expiries that failed alone, and when this process tries them again.
        self._expiry_waits: dict[int, float] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                self._loop(self.deliver, Q.scheduler_next_delivery), name="citelink-delivery"
            ),
            asyncio.create_task(
                self._loop(self.expire, Q.scheduler_next_expiry), name="citelink-expiry"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self, work: Callable[[], Awaitable[tuple[int, int]]], next_due: str) -> None:
        failing = False
        while True:
            try:
                found, settled = await work()
                if found == BATCH and settled:
                    pause = 0.0  # a full batch: there may be more
                else:
                    # Due now but not settled (held by another process, or
                    # waiting to be tried again): not before the idle time.
                    pause = await self._until(next_due) or self._idle
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

    async def _until(self, query: str) -> float:
        """Seconds until the next due time of `query`, at most the idle time;
        0 when something is due now (the next batch)."""
        due = await self._pool.fetchval(query, timeout=self._timeout)
        if not isinstance(due, datetime):
            # None, or past what datetime holds (citelink.db.decoding): 'infinity'
            # or the year 10000 (a BC one was due, and settled already).
            return self._idle
        return min(self._idle, max(0.0, (due - datetime.now(UTC)).total_seconds()))

    async def deliver(self) -> tuple[int, int]:
        """Deliver what is due now: how many were found, how many delivered.
        Batches hold at most BATCH_RECIPIENTS recipients (as the subscriptions
        are now), so that a batch of small ones stays well within the
        statement timeout and a big one goes alone."""
        due = await self._pool.fetch(Q.scheduler_due_deliveries, BATCH, timeout=self._timeout)
        delivered, size = 0, 0
        batch: list[int] = []
        for row in due:
            if batch and size + row["recipients"] > BATCH_RECIPIENTS:
                delivered += await self._settle(batch, Q.scheduler_deliver, self._failed)
                batch, size = [], 0
            batch.append(row["id"])
            size += row["recipients"]
        delivered += await self._settle(batch, Q.scheduler_deliver, self._failed)
        return len(due), delivered

    async def expire(self) -> tuple[int, int]:
        """Expire what is due now (a batch): how many notifications were found,
        how many settled."""
        now = time.monotonic()
        self._expiry_waits = {k: t for k, t in self._expiry_waits.items() if t > now}
        due = await self._pool.fetch(
            Q.scheduler_due_expiries, BATCH, list(self._expiry_waits), timeout=self._timeout
        )
        ids = [r["id"] for r in due]
        return len(ids), await self._settle(ids, Q.scheduler_expire, self._expiry_failed)

    async def _settle(
        self,
        ids: list[int],
        query: str,
        failed: Callable[[int, BaseException], Awaitable[None]],
    ) -> int:
        """`query` over `ids` in one transaction; when that fails, over each
        id in a transaction of its own, so that the one that fails is told
        apart and the others go on."""
        if not ids:
            return 0
        async with self._pool.acquire() as conn:  # unavailable: the loop waits
            try:
                async with conn.transaction():
                    settled: int = await conn.fetchval(query, ids, timeout=self._timeout)
                    return settled
            except (asyncpg.PostgresError, TimeoutError) as exc:
                if isinstance(exc, LOST):
                    raise
                failure: BaseException = exc
        if len(ids) == 1:
            await failed(ids[0], failure)
            return 0
        return sum([await self._settle([one], query, failed) for one in ids])

    async def _failed(self, note_id: int, exc: BaseException) -> None:
        error = _describe(exc, self._timeout)
        log.warning("scheduled notification %d could not be delivered: %s", note_id, error)
        await self._pool.execute(Q.scheduler_delivery_failed, note_id, error, timeout=self._timeout)

    async def _expiry_failed(self, note_id: int, exc: BaseException) -> None:
        log.warning(
            "notification %d could not be expired: %s", note_id, _describe(exc, self._timeout)
        )
        self._expiry_waits[note_id] = time.monotonic() + EXPIRY_RETRY_SECONDS


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
        return f"did not finish within {timeout:g} s"
    return str(exc) or type(exc).__name__
