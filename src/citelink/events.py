"""What the database tells the relay: the payloads of the `citelink_events`
channel (their grammar is in sql/triggers.sql, where the triggers send them).

Payloads carry ids and numbers only: the relay reads content from the tables.
"""

from __future__ import annotations

from typing import NamedTuple

CHANNEL = "citelink_events"
ITEM_KINDS = frozenset({"new", "read", "unread", "delete", "restore"})


class Event(NamedTuple):
    """One payload: "<kind> <user_id> <item_id> <notification_id> <position>
    <unread>" for an item, "fanout <notification_id> <recipients>" for a big
    fan-out (its recipients in `unread`), "revoke <user_id>". Fields a kind
    does not carry are 0."""

    kind: str
    user_id: int
    item_id: int = 0
    notification_id: int = 0
    position: int = 0
    unread: int = 0


def parse_event(payload: str) -> Event | None:
    """The event in `payload`, or None when it is not one of ours."""
    kind, *fields = payload.split(" ")
    try:
        numbers = [int(f) for f in fields]
    except ValueError:
        return None
    if kind in ITEM_KINDS and len(numbers) == 5:
        return Event(kind, *numbers)
    if kind == "fanout" and len(numbers) == 2:
        return Event(kind, 0, notification_id=numbers[0], unread=numbers[1])
    if kind == "revoke" and len(numbers) == 1:
        return Event(kind, numbers[0])
    return None
