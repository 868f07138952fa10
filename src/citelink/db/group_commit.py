"""Group commit: concurrent publishes of one publisher share a statement.

PostgreSQL commits one transaction that called pg_notify at a time: the
notification queue's lock is held until the commit is flushed. So
publishes committed one by one queue at that lock, and batching them pays:
measured on 2 cores with `python -m bench.group_commit`, 8 connections
inserting one notification each made 1,087 per second at 1.21 ms of
PostgreSQL CPU each (fewer than one connection alone); one connection
inserting 8 per statement made 2,891 per second at 0.28 ms each.

A publish runs at once, alone, while fewer than `slots` statements of its
publisher run (a lone publish waits for nothing). Otherwise it waits for a
slot, and the publishes waiting when one frees go together as one statement
(at most `most`). When that statement fails with an error that rolled it
back and may be one publish's own (`alone` says so: a missing tag, a
constraint, a lost race), each of them runs alone, so each gets its own
answer or its own error; any other failure is theirs all, a statement
timeout too (a shared statement holds at most CITELINK_PUBLISHER_CONCURRENCY
- 2 publishes, 6 by default, as the caller's budget lets no more wait). Two
slots: a big fan-out holds one, and the small publishes behind it go
through the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

SLOTS = 2
MOST = 64


@dataclass
class _Lane(Generic[T]):
    running: int = 0
    waiting: list[tuple[Any, asyncio.Future[T]]] = field(default_factory=list)


class GroupCommit(Generic[T]):
    """Runs `one(args)` at once or `many([args, ...])` for the waiting ones, by key."""

    def __init__(
        self,
        one: Callable[[Any], Awaitable[T]],
        many: Callable[[list[Any]], Awaitable[list[T]]],
        alone: Callable[[Exception], bool],
        slots: int = SLOTS,
        most: int = MOST,
    ):
        self._one, self._many, self._alone = one, many, alone
        self._slots, self._most = slots, most
        self._lanes: dict[Hashable, _Lane[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.shared = 0  # publishes done in a statement of more than one, so far

    @property
    def waiting(self) -> int:
        """Publishes waiting for a slot now."""
        return sum(len(lane.waiting) for lane in self._lanes.values())

    async def run(self, key: Hashable, args: Any) -> T:
        """`one(args)`, or its share of a `many` with other waiting args of `key`."""
        lane = self._lanes.setdefault(key, _Lane())
        if lane.running < self._slots:
            lane.running += 1
            try:
                return await self._one(args)
            finally:
                self._release(key, lane)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        lane.waiting.append((args, done))
        return await done

    def _release(self, key: Hashable, lane: _Lane[T]) -> None:
        """A slot of `key` is free: the waiting take it, together."""
        lane.running -= 1
        if lane.waiting:
            batch, lane.waiting = lane.waiting[: self._most], lane.waiting[self._most :]
            lane.running += 1
            task = asyncio.create_task(self._batch(key, lane, batch))
            self._tasks.add(task)  # a reference until it ends
            task.add_done_callback(self._tasks.discard)
        elif lane.running == 0:
            del self._lanes[key]

    async def _batch(
        self, key: Hashable, lane: _Lane[T], batch: list[tuple[Any, asyncio.Future[T]]]
    ) -> None:
        try:
            # One whose request was cancelled meanwhile is not published.
            batch = [(args, done) for args, done in batch if not done.done()]
            if len(batch) > 1:
                try:
                    results = await self._many([args for args, _ in batch])
                except Exception as exc:
                    if not self._alone(exc):
                        for _, done in batch:
                            _settle(done, exc)
                        return
                else:
                    self.shared += len(batch)
                    for (_, done), result in zip(batch, results, strict=True):
                        _settle(done, result)
                    return
            for args, done in batch:
                try:
                    _settle(done, await self._one(args))
                except Exception as exc:
                    _settle(done, exc)
        finally:
            for _, done in batch:
                done.cancel()  # only when this task was cancelled (shutdown)
            self._release(key, lane)


def _settle(done: asyncio.Future[T], outcome: T | Exception) -> None:
    """Answer a waiting publish (unless it was cancelled meanwhile)."""
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
