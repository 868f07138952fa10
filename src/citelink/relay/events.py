"""What the database tells the relay: the payloads of the `citelink_events`
channel (their grammar is in sql/triggers.sql, where the triggers send them).

Payloads carry ids and numbers only: the relay reads content from the tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from citelink.shapes import InboxItem

CHANNEL = "citelink_events"
ITEM_KINDS = frozenset({"new", "change", "update", "remove"})

# An item's state, as one number (sql/triggers.sql, citelink_item_state).
SEEN, READ, ARCHIVED, INTERACTED, DELETED, EXPIRED, QUIET, MUTED = 1, 2, 4, 8, 16, 32, 64, 128


def state_of(item: InboxItem) -> int:
    """The state number of an inbox item as citelink.db.inbox_store shows it (neither
    deleted nor expired; how it was delivered is not in its shape, and not
    needed to tell its changes)."""
    return (
        SEEN * item["is_seen"]
        + READ * item["is_read"]
        + ARCHIVED * item["is_archived"]
        + INTERACTED * (item["interacted_at"] is not None)
    )


class Counts(NamedTuple):
    """A user's counts (inbox_count): the default list's unseen, unread and
    total items, and the archived ones."""

    unseen: int
    unread: int
    total: int
    archived: int


NO_COUNTS = Counts(0, 0, 0, 0)


class Event(NamedTuple):
    """One payload. Item events ("<kind> <user_id> <item_id> <notification_id>
    <position> <old> <new> <unseen> <unread> <total> <archived>") fill every
    field; "bulk <user_id> <items> <counts...>" a user, `items` and counts;
    "fanout <notification_id> <recipients>" a notification and `items`;
    "revoke <user_id> <generation> <active>" a user, `generation` and `active`."""

    kind: str
    user_id: int = 0
    item_id: int = 0
    notification_id: int = 0
    position: int = 0
    old: int = 0
    new: int = 0
    counts: Counts = NO_COUNTS
    items: int = 0
    generation: int = 0
    active: bool = False


def parse_event(payload: str) -> Event | None:
    """The event in `payload`, or None when it is not one of ours."""
    kind, *fields = payload.split(" ")
    try:
        n = [int(f) for f in fields]
    except ValueError:
        return None
    if kind in ITEM_KINDS and len(n) == 10:
        user_id, item_id, notification_id, position, old, new = n[:6]
        return Event(kind, user_id, item_id, notification_id, position, old, new, Counts(*n[6:]))
    if kind == "bulk" and len(n) == 6:
        return Event(kind, n[0], items=n[1], counts=Counts(*n[2:]))
    if kind == "fanout" and len(n) == 2:
        return Event(kind, notification_id=n[0], items=n[1])
    if kind == "revoke" and len(n) == 3:
        return Event(kind, n[0], generation=n[1], active=bool(n[2]))
    return None
