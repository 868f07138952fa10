"""How much database work one caller may start at once: the per-user budget.

Every database operation a user starts -- a REST request, a socket frame, a
bulk action -- claims a slot of that user's budget (an API key's budget is its
own) and runs with its class's statement timeout. A user may hold at most
`per_user` slots at once (staff and keys, who publish, `per_publisher`),
always fewer than the pool's connections, so no one caller can hold the whole
pool. Past the limit a request waits for a slot up to a second (holding no
connection), then is refused: 429 on REST, a `rate_limited` error frame on a
socket. Per process: each worker of `serve --workers N` counts its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


class Busy(Exception):
    """The caller already runs as much database work as their budget allows."""


@dataclass
class _Slots:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class WorkBudget:
    """Slots of database work per caller (`key`: a user id, or an API key's)."""

    def __init__(self, per_user: int, per_publisher: int, *, wait_seconds: float = 1.0):
        self.per_user = per_user
        self.per_publisher = per_publisher
        self.wait_seconds = wait_seconds
        self._slots: dict[Hashable, _Slots] = {}

    def running(self, key: Hashable) -> int:
        slots = self._slots.get(key)
        return slots.running if slots else 0

    @asynccontextmanager
    async def claim(self, key: Hashable, *, publisher: bool = False) -> AsyncIterator[None]:
        """Hold one of `key`'s slots for the block; Busy when none comes free
        within the wait. Those waiting hold no database connection, and are as
        many as the caller's sockets and HTTP connections at most."""
        limit = self.per_publisher if publisher else self.per_user
        slots = self._slots.setdefault(key, _Slots())
        if slots.running >= limit:
            waiter = asyncio.get_running_loop().create_future()
            slots.waiting.append(waiter)
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._release(key, slots)  # handed a slot just as we gave up
                elif waiter in slots.waiting:  # (a release may have dropped it)
                    slots.waiting.remove(waiter)
                if isinstance(exc, TimeoutError):
                    raise Busy from None
                raise
        else:
            slots.running += 1
        try:
            yield
        finally:
            self._release(key, slots)

    def _release(self, key: Hashable, slots: _Slots) -> None:
        """Hand the slot to the first waiter, or free it."""
        while slots.waiting:
            waiter = slots.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        slots.running -= 1
        if slots.running == 0:
            del self._slots[key]
