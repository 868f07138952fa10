"""Waiting for something to happen, bounded in time (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import asyncpg


async def wait_until(
    predicate: Callable[[], Any], within: float = 5.0, interval: float = 0.005
) -> Any:
    """Poll `predicate` (a function, or a coroutine function) until it returns a
    truthy value, which is returned; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)


async def blockers(conn: asyncpg.Connection, waiter: asyncpg.Connection) -> list[int]:
    """The backends whose locks the backend of `waiter` is waiting for."""
    return await conn.fetchval("SELECT pg_blocking_pids($1)", waiter.get_server_pid())


async def waits_for(
    conn: asyncpg.Connection, waiter: asyncpg.Connection, holder: asyncpg.Connection
) -> None:
    """Until `waiter`'s backend waits on a lock that `holder`'s backend holds."""

    async def waiting() -> bool:
        return holder.get_server_pid() in await blockers(conn, waiter)

    await wait_until(waiting)
