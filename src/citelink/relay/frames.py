"""What sockets are told: the server's WebSocket frames, as JSON text.

A push of a new item is the hot path (one per recipient of every
notification): the notification's content is rendered once (`content`), and
each recipient's frame is its own head followed by it (`push`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from citelink.relay.events import ARCHIVED, DELETED, EXPIRED, INTERACTED, READ, SEEN, Counts
from citelink.responses import dumps

if TYPE_CHECKING:
    from citelink.shapes import InboxItem

# The state fields of an item nobody has touched yet.
UNTOUCHED = {
    "is_seen": False,
    "seen_at": None,
    "is_read": False,
    "read_at": None,
    "is_archived": False,
    "archived_at": None,
    "interacted_at": None,
    "action": None,
    "count": 1,
    "notification_ids": None,
}


def frame(kind: str, **fields: Any) -> str:
    """`{"type": kind, **fields}` as JSON text."""
    return dumps({"type": kind, **fields}).decode()


def item(item: InboxItem) -> str:
    """The `notification` frame of an inbox item (the shape of citelink.db.inbox_store)."""
    return frame("notification", **item)


def content(notification: dict[str, Any]) -> str:
    """What every recipient of a notification is shown while their item is
    untouched, without the opening brace: `push` puts each recipient's own
    head before it."""
    return dumps(notification | UNTOUCHED).decode()[1:]


def push(item_id: int, position: int, content: str) -> str:
    """The `notification` frame of a new item, from its notification's `content`."""
    return f'{{"type":"notification","id":{item_id},"position":{position},{content}'


def counts(value: Counts) -> str:
    return frame("counts", **value._asdict())


def state(kind: str, item_id: int) -> str:
    """A frame that names an item and what became of it (`read`, `delete`, ...)."""
    return f'{{"type":"{kind}","id":{item_id}}}'


def error(code: str, detail: str) -> str:
    return frame("error", code=code, detail=detail)


# State bit -> the frames that tell it was set and cleared (extended protocol).
_TOLD = [
    (SEEN, "seen", "unseen"),
    (READ, "read", "unread"),
    (ARCHIVED, "archive", "unarchive"),
    (DELETED, "delete", None),  # cleared: the item is pushed again (restore)
    (EXPIRED, "expire", None),
]


def needs_current(old: int, new: int) -> bool:
    """Whether telling the change from `old` to `new` needs the item as it is
    now: it came back into the list, or was interacted with (its action)."""
    gone = DELETED | ARCHIVED | EXPIRED
    came_back = bool(old & gone) and not new & gone
    return came_back or bool(new & ~old & INTERACTED)


def changes(
    item_id: int, old: int, new: int, *, extended: bool, current: InboxItem | None = None
) -> list[str]:
    """The frames that take a client from an item's state `old` to `new`.
    `current` (the item as it is now) is needed when it comes back into the
    list and when it was interacted with (its action). The seed protocol is
    told only what its server told: reads, and deletes (archiving takes an item
    out of its list too), and an item that comes back is pushed again."""
    changed = old ^ new
    out: list[str] = []
    if not extended:
        if changed & READ and new & READ:
            out.append(state("read", item_id))
        gone = DELETED | ARCHIVED | EXPIRED
        listed = not new & gone
        if changed & gone and not listed and not old & gone:
            out.append(state("delete", item_id))
        elif changed & gone and listed and current is not None:
            out.append(item(current))
        return out
    # What a frame implies is not told again: an interaction reads the item,
    # reading sees it.
    if changed & INTERACTED and new & INTERACTED:
        changed &= ~(READ | SEEN) if new & READ else ~SEEN
    elif changed & READ and new & READ:
        changed &= ~SEEN
    for bit, was_set, was_cleared in _TOLD:
        if changed & bit:
            kind = was_set if new & bit else was_cleared
            if kind:
                out.append(state(kind, item_id))
            elif current is not None:
                out.append(item(current))
    if changed & INTERACTED and new & INTERACTED:
        action = current["action"] if current else None
        out.append(frame("interact", id=item_id, action=action))
    return out
