"""A user's inbox, for REST and WebSocket alike.

Items have one shape everywhere: {id, notification_id, tag, tag_name, message,
data, timestamp, is_read, read_at, position}; `id` is the inbox
(user_notification) id and `tag` the tag id, as in the seed. `position` is the
item's place in the user's order (1, 2, 3, ... in commit order): lists are
newest first by it, and cursors given as item ids are placed in it by the
database. Writes run with the user as the audit actor; the triggers then tell
every socket of the user.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

from .database import transaction
from .queries import Q

Status = Literal["all", "unread", "read"]
_PAGE = {"all": Q.inbox_page_all, "unread": Q.inbox_page_unread, "read": Q.inbox_page_read}


def item(row: asyncpg.Record) -> dict:
    return dict(row)


async def page(
    conn: asyncpg.Connection | asyncpg.Pool,
    user_id: int,
    *,
    before: int | None = None,
    limit: int = 20,
    status: Status = "all",
    tag: int | None = None,
) -> list[dict]:
    """Newest first, the items before item `before` (keyset pagination); from
    the newest when None."""
    rows = await conn.fetch(_PAGE[status], user_id, before, tag, limit)
    return [item(r) for r in rows]


async def page_by_number(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, page_number: int, page_size: int
) -> list[dict]:
    """The seed's numbered pages (1-based), newest first."""
    rows = await conn.fetch(Q.inbox_page_offset, user_id, (page_number - 1) * page_size, page_size)
    return [item(r) for r in rows]


async def after(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, position: int, limit: int
) -> list[dict]:
    """Items above `position` in the user's order, oldest first. Positions are
    given in commit order (sql/triggers.sql), so this never skips an item that
    committed late."""
    return [item(r) for r in await conn.fetch(Q.inbox_after, user_id, position, limit)]


async def position_after(
    conn: asyncpg.Connection | asyncpg.Pool, user_id: int, item_id: int
) -> int:
    """The position that "after item `item_id`" stands for (0: from the start)."""
    return await conn.fetchval(Q.inbox_position_after, user_id, item_id)


async def get(conn: asyncpg.Connection | asyncpg.Pool, user_id: int, item_id: int) -> dict | None:
    row = await conn.fetchrow(Q.inbox_item, user_id, item_id)
    return item(row) if row else None


async def counts(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> dict:
    return dict(await conn.fetchrow(Q.inbox_counts, user_id))


async def set_read(pool: asyncpg.Pool, user_id: int, item_id: int, is_read: bool) -> bool:
    """Mark read or unread; False when the user has no such (visible) item."""
    async with transaction(pool, user_id) as conn:
        return await conn.fetchval(Q.inbox_set_read, user_id, item_id, is_read) is not None


async def delete(pool: asyncpg.Pool, user_id: int, item_id: int) -> bool:
    """Soft delete; False when the user has no such (visible) item."""
    async with transaction(pool, user_id) as conn:
        return await conn.fetchval(Q.inbox_delete, user_id, item_id) is not None


async def read_all(pool: asyncpg.Pool, user_id: int, tag: int | None = None) -> int:
    """Mark every unread item (of one tag, if given) read; return how many."""
    async with transaction(pool, user_id) as conn:
        return await conn.fetchval(Q.inbox_read_all, user_id, tag)
