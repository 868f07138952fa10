"""A user's inbox, for REST and WebSocket alike.

Items have one shape everywhere: {id, notification_id, tag, tag_name, message,
data, timestamp, position, is_seen, seen_at, is_read, read_at, is_archived,
archived_at, interacted_at, action, priority, group_key, count,
notification_ids, expires_at}; `id` is the inbox (user_notification) id and
`tag` the tag id, as in the seed (null for a notification to listed users).
`position` is the item's place in the user's order (1, 2, 3, ... in commit
order): lists are newest first by it, and cursors given as item ids are
placed in it by the database.

The default list is what is neither deleted, archived nor expired; its
high-priority unread items are pinned: listed apart, above the rest. A `Filter` selects
from a user's items by status and by their notification (tags, `data`
containment, time), for lists, counts and bulk actions alike. Writes run with
the user as the audit actor; the triggers then count, audit and tell every
socket of the user.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple

import asyncpg

from citelink.db.connection import Queryable
from citelink.db.queries import Q
from citelink.shapes import InboxCounts, InboxItem

Status = Literal["all", "unseen", "unread", "read", "archived"]
# Each status's condition on an item (unseen items are unread ones too:
# reading implies seen). Constants, spliced into the statements once, here.
STATUS: dict[str, str] = {
    "all": "NOT is_archived",
    "unseen": "NOT is_archived AND NOT is_read AND NOT is_seen",
    "unread": "NOT is_archived AND NOT is_read",
    "read": "NOT is_archived AND is_read",
    "archived": "is_archived",
}
Action = Literal["seen", "read", "unread", "archive", "unarchive", "delete"]
# Each bulk action: what it sets, and which items it changes.
ACTIONS: dict[str, tuple[str, str]] = {
    "seen": ("is_seen = true", "NOT i.is_seen"),
    "read": ("is_read = true", "NOT i.is_read"),
    "unread": ("is_read = false", "i.is_read"),
    "archive": ("is_archived = true", "NOT i.is_archived"),
    "unarchive": ("is_archived = false", "i.is_archived"),
    "delete": ("is_deleted = true", "true"),
}
_PAGE = {status: Q.inbox_page.replace("/*status*/", cond) for status, cond in STATUS.items()}
_WINDOW = {status: Q.inbox_window.replace("/*status*/", cond) for status, cond in STATUS.items()}
_BULK = {
    (action, status): Q.inbox_bulk.replace("/*status*/", cond)
    .replace("/*set*/", sets)
    .replace("/*changes*/", changes)
    for status, cond in STATUS.items()
    for action, (sets, changes) in ACTIONS.items()
}


@dataclass(frozen=True)
class Filter:
    """Which of a user's items: a status, and the tags, `data` (JSON
    containment) and time range of their notifications; None for any."""

    status: Status = "all"
    tags: list[int] | None = None
    data: dict[str, Any] | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def args(
        self,
    ) -> tuple[list[int] | None, dict[str, Any] | None, datetime | None, datetime | None]:
        return self.tags, self.data, self.since, self.until

    @property
    def narrowed(self) -> bool:
        """Whether anything beyond the status is filtered on."""
        return any(value is not None for value in self.args)


EVERYTHING = Filter()
# Tries of one write that keeps meeting an item lock held outside the lock order.
WRITE_ATTEMPTS = 5


def item(row: asyncpg.Record) -> InboxItem:
    """An item from a row of the inbox_item view (every query of items selects
    these columns)."""
    return {
        "id": row["id"],
        "notification_id": row["notification_id"],
        "tag": row["tag"],
        "tag_name": row["tag_name"],
        "message": row["message"],
        "data": row["data"],
        "timestamp": row["timestamp"],
        "position": row["position"],
        "is_seen": row["is_seen"],
        "seen_at": row["seen_at"],
        "is_read": row["is_read"],
        "read_at": row["read_at"],
        "is_archived": row["is_archived"],
        "archived_at": row["archived_at"],
        "interacted_at": row["interacted_at"],
        "action": row["action"],
        "priority": row["priority"],
        "group_key": row["group_key"],
        "count": row["count"],
        "notification_ids": row["notification_ids"],
        "expires_at": row["expires_at"],
    }


def action_ids(item: InboxItem) -> list[object]:
    """The ids of an item's actions. Rows inserted by plain SQL skip the
    check at publish, so `actions` may be anything: what is not a list of
    objects offers nothing."""
    actions = item["data"].get("actions")
    if not isinstance(actions, list):
        return []
    return [a.get("id") for a in actions if isinstance(a, dict)]


class Listing(NamedTuple):
    """A page of a listing: its items, the `before` of the next page (None on
    the last), and the pinned items shown above it (the first page of a
    status that pins them; None otherwise)."""

    items: list[InboxItem]
    next: int | None
    pinned: list[InboxItem] | None


# The statuses whose listing pins the high-priority unread items above the rest.
PINNING = frozenset({"all", "unread", "unseen"})


async def listing(
    conn: Queryable,
    user_id: int,
    *,
    before: int | None = None,
    limit: int = 20,
    where: Filter = EVERYTHING,
    window: int | None = None,
) -> Listing:
    """Newest first, up to `limit` items before item `before` (keyset
    pagination; None: from the newest). A status that pins leaves the pinned
    items out of its pages and lists them apart, with the first. A filter
    that narrows by tags, data or time looks at no more than `window` items
    of the status's list: a page may then hold fewer items, and the next one
    goes on below the last item looked at. Without the bound a rare filter
    walks the whole inbox."""
    apart = where.status in PINNING
    floor = None
    if window is not None and where.narrowed:
        floor = await conn.fetchrow(_WINDOW[where.status], user_id, before, window)
    rows = await conn.fetch(
        _PAGE[where.status],
        user_id,
        before,
        *where.args,
        limit + 1,
        apart,
        floor["position"] if floor else None,
    )
    items = [item(r) for r in rows[:limit]]
    after: int | None = items[-1]["id"] if len(rows) > limit else None
    if after is None and floor:
        after = floor["id"]
    shown = None
    if apart and before is None:
        rows = await conn.fetch(Q.inbox_pinned, user_id, *where.args, limit)
        shown = [item(r) for r in rows]
    return Listing(items, after, shown)


async def page_by_number(
    conn: Queryable, user_id: int, page_number: int, page_size: int
) -> list[InboxItem]:
    """The seed's numbered pages (1-based) of the default list, newest first."""
    rows = await conn.fetch(Q.inbox_page_offset, user_id, (page_number - 1) * page_size, page_size)
    return [item(r) for r in rows]


async def after(conn: Queryable, user_id: int, position: int, limit: int) -> list[InboxItem]:
    """The default list above `position` in the user's order, oldest first.
    Positions are given in commit order (sql/triggers.sql), so this never
    skips an item that committed late."""
    return [item(r) for r in await conn.fetch(Q.inbox_after, user_id, position, limit)]


async def position_after(conn: Queryable, user_id: int, item_id: int) -> int:
    """The position that "after item `item_id`" stands for (0: from the start)."""
    position: int = await conn.fetchval(Q.inbox_position_after, user_id, item_id)
    return position


async def get(conn: Queryable, user_id: int, item_id: int) -> InboxItem | None:
    row = await conn.fetchrow(Q.inbox_item, user_id, item_id)
    return item(row) if row else None


async def counts(conn: Queryable, user_id: int, where: Filter = EVERYTHING) -> InboxCounts:
    """{unseen, unread, total, archived}: from the counter row (O(1)) unless
    `where` narrows by tags, data or time (its status is not a count's)."""
    if where.narrowed:
        row = await conn.fetchrow(Q.inbox_counts_filtered, user_id, *where.args)
    else:
        row = await conn.fetchrow(Q.inbox_counts, user_id)
    assert row is not None  # both queries answer one row, whatever the user has
    return {
        "unseen": row["unseen"],
        "unread": row["unread"],
        "total": row["total"],
        "archived": row["archived"],
    }


async def _write(pool: asyncpg.Pool, query: str, *args: object) -> object:
    """One write of a user's inbox (its statement locks their counter row
    first, sql/triggers.sql "Lock order"). Past its short wait for an item
    lock, held by a plain SQL writer waiting for this very counter row, it
    gives up and is tried again, a few times, so that writer can finish."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return await pool.fetchval(query, *args)
        except asyncpg.LockNotAvailableError:
            if attempt == WRITE_ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")


async def set_state(
    pool: asyncpg.Pool,
    user_id: int,
    item_id: int,
    *,
    is_seen: bool | None = None,
    is_read: bool | None = None,
    is_archived: bool | None = None,
) -> bool:
    """Set the given flags (None: as it is); False when the user has no such
    (non-deleted) item."""
    changed = await _write(pool, Q.inbox_set_state, user_id, item_id, is_seen, is_read, is_archived)
    return changed is not None


async def interact(pool: asyncpg.Pool, user_id: int, item_id: int, action: str | None) -> bool:
    """Record a click on the item's link (`action` None) or one of its actions."""
    return await _write(pool, Q.inbox_interact, user_id, item_id, action) is not None


async def delete(pool: asyncpg.Pool, user_id: int, item_id: int) -> bool:
    """Soft delete; False when the user has no such (visible) item."""
    return await _write(pool, Q.inbox_delete, user_id, item_id) is not None


async def bulk(pool: asyncpg.Pool, user_id: int, action: Action, where: Filter = EVERYTHING) -> int:
    """Apply `action` to every item `where` selects, in one statement; how
    many it changed. A second bulk call of the same user waits for the first
    (their counter row)."""
    if action == "unarchive" and where.status == "all":
        # The default list holds no archived item: unarchiving means the archived ones.
        where = replace(where, status="archived")
    changed = await _write(pool, _BULK[action, where.status], user_id, *where.args)
    assert isinstance(changed, int)
    return changed
