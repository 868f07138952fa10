"""Events into deliveries: what each connected user's sockets are sent for one
batch of events (everything the listener received together).

A `fanout` event (one for all recipients of a big notification) becomes the
`new` events of the users connected here, with one query. The content of new
items is read with one query per batch and kept in a small LRU
(citelink/relay/frames.py renders it once per notification, however many
recipients are connected). Some events are told with the item as it is now,
read with one more query. A failure to render one event or one notification
costs only that one: the rest of the batch is delivered.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping

import asyncpg

from citelink.db import inbox_store
from citelink.db.connection import Queryable
from citelink.db.queries import Q
from citelink.relay import frames
from citelink.relay.events import MUTED, QUIET, Counts, Event
from citelink.relay.peers import Delivery
from citelink.shapes import InboxItem

log = logging.getLogger("citelink.relay.hub")

QUERY_TIMEOUT = 10.0
# Notifications whose rendered content is kept (a fan-out spans several batches).
CONTENT_CACHE = 256


async def current_items(conn: Queryable, ids: list[int]) -> dict[int, InboxItem]:
    """The items of `ids` (the relay's own: ids from the database's events)
    that are not deleted, as citelink.db.inbox_store shows them."""
    if not ids:
        return {}
    rows = await conn.fetch(Q.relay_items, ids, timeout=QUERY_TIMEOUT)
    return {r["id"]: inbox_store.item(r) for r in rows}


def _touched(event: Event) -> bool:
    """Whether a new item was created with a state of its own (a plain SQL
    insert), beyond how it was delivered."""
    return bool(event.new & ~(QUIET | MUTED))


def _render(
    seq: int, e: Event, content: dict[int, str], current: dict[int, InboxItem]
) -> Delivery | None:
    """One event as its user's sockets get it; None when there is nothing to
    tell (the item was deleted before it was read)."""
    frame, item = "", current.get(e.item_id)
    if e.kind == "new":
        tail = content.get(e.notification_id)
        if e.new & QUIET:
            frame = ""  # not pushed (citelink.relay.peers)
        elif _touched(e) and item:
            frame = frames.item(item)
        elif tail and not _touched(e):
            frame = frames.push(e.item_id, e.position, tail)
        else:
            return None
    elif e.kind == "update":
        if item is None:
            return None
        frame = frames.item(item)
    return Delivery(
        seq, e.kind, e.item_id, e.position, e.old, e.new, e.counts, frame, item, e.items
    )


class Renderer:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool
        self._content: OrderedDict[int, str] = OrderedDict()

    async def render(
        self,
        received: list[tuple[int, Event]],
        connected: Mapping[int, object],
        fail: Callable[[int, str], None],
    ) -> dict[int, list[Delivery]]:
        """The deliveries of each user in `connected` (user id → their sockets)
        for events `received` (with their sequence numbers); `fail(user_id,
        what)` is told of an event that could not be rendered."""
        batch = await self._expand_fan_outs(received, connected)
        batch = [(seq, e) for seq, e in batch if e.user_id in connected]
        content = await self._contents(
            {e.notification_id for _, e in batch if e.kind == "new" and not _touched(e)}
        )
        # A new item someone already touched (a plain SQL insert) is pushed as
        # it is, so is one a grouped notification moved, and some changes are
        # told with the item as it is now.
        current = await current_items(
            self._pool,
            [
                e.item_id
                for _, e in batch
                if (e.kind == "new" and _touched(e))
                or e.kind == "update"
                or (e.kind == "change" and frames.needs_current(e.old, e.new))
            ],
        )
        per_user: dict[int, list[Delivery]] = {}
        for seq, e in batch:
            try:
                delivery = _render(seq, e, content, current)
            except Exception:
                fail(e.user_id, "could not render an event")
                continue
            if delivery is not None:
                per_user.setdefault(e.user_id, []).append(delivery)
        return per_user

    async def _expand_fan_outs(
        self, batch: list[tuple[int, Event]], connected: Mapping[int, object]
    ) -> list[tuple[int, Event]]:
        """`fanout` events as the `new` events of the users connected here: one
        query for the batch, by notification when the recipients are fewer than
        the connected users, else by connected user."""
        fan_outs = {e.notification_id: e.items for _, e in batch if e.kind == "fanout"}
        if not fan_outs:
            return batch
        notifications = list(fan_outs)
        if sum(fan_outs.values()) <= len(connected):
            rows = await self._pool.fetch(
                Q.relay_fan_out_items, notifications, timeout=QUERY_TIMEOUT
            )
        else:
            rows = await self._pool.fetch(
                Q.relay_fan_out_items_of_users,
                notifications,
                list(connected),
                timeout=QUERY_TIMEOUT,
            )
        by_notification: dict[int, list[Event]] = {}
        for r in rows:
            counts = Counts(r["unseen"], r["unread"], r["total"], r["archived"])
            new = Event("new", r["user_id"], r["id"], r["notification_id"], r["position"])
            by_notification.setdefault(r["notification_id"], []).append(new._replace(counts=counts))
        expanded: list[tuple[int, Event]] = []
        for seq, e in batch:
            if e.kind == "fanout":
                expanded.extend((seq, new) for new in by_notification.get(e.notification_id, ()))
            else:
                expanded.append((seq, e))
        return expanded

    async def _contents(self, notification_ids: set[int]) -> dict[int, str]:
        """The rendered content of these notifications (citelink.relay.frames.content),
        from the cache or read in one query."""
        content = {}
        for notification_id in notification_ids:
            if notification_id in self._content:
                self._content.move_to_end(notification_id)
                content[notification_id] = self._content[notification_id]
        missing = [n for n in notification_ids if n not in content]
        if missing:
            content.update(await self._load_content(missing))
        return content

    async def _load_content(self, notification_ids: list[int]) -> dict[int, str]:
        rows = await self._pool.fetch(
            Q.relay_notifications, notification_ids, timeout=QUERY_TIMEOUT
        )
        loaded = {}
        for row in rows:
            try:
                content = frames.content(dict(row))
            except Exception:
                # Its recipients are not pushed this one; everyone else is.
                log.exception("could not render notification %s", row["notification_id"])
                continue
            loaded[row["notification_id"]] = self._content[row["notification_id"]] = content
        while len(self._content) > CONTENT_CACHE:
            self._content.popitem(last=False)
        return loaded
