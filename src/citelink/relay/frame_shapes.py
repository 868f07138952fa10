"""The frames the server sends on a socket, as types: one TypedDict per
`type` (SERVER_FRAMES), the WebSocket counterpart of citelink.shapes.

citelink.relay.frames builds them (as JSON text, for speed); the socket tests check
every frame they receive against its type here (tests/wsclient.py), and
`frame_schema()` is their JSON Schema for clients that generate code.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, get_args

import msgspec

from citelink.shapes import Id, InboxCounts, InboxItem

ItemState = Literal["read", "unread", "seen", "unseen", "archive", "unarchive", "delete", "expire"]


class NotificationFrame(InboxItem):
    """A new item, an item replayed by `resume`, moved by grouping, or back in
    the list. The seed protocol reads `id`, `message`, `is_read`, `timestamp`."""

    type: Literal["notification"]


class StateFrame(TypedDict):
    """An item's state changed, whoever changed it."""

    type: ItemState
    id: Id


class InteractFrame(TypedDict):
    type: Literal["interact"]
    id: Id
    action: str | None


class CountsFrame(InboxCounts):
    type: Literal["counts"]


class RefreshFrame(TypedDict):
    """One statement changed too many items to tell: reload."""

    type: Literal["refresh"]
    items: int


class ListFrame(TypedDict):
    """A `notifications_list` answer: a cursor page (`next`, maybe `pinned`)
    or, to the seed form, a numbered one (`page`, `total_pages`, `total`)."""

    type: Literal["notifications_list"]
    data: list[InboxItem]
    next: NotRequired[int | None]
    pinned: NotRequired[list[InboxItem]]
    page: NotRequired[int]
    total_pages: NotRequired[int]
    total: NotRequired[int]


class UpdatedFrame(TypedDict):
    type: Literal["read_all", "seen_all"]
    updated: int


class BulkFrame(TypedDict):
    type: Literal["bulk"]
    action: str
    updated: int


class ResumedFrame(TypedDict):
    type: Literal["resumed"]
    count: int
    last_id: int


class PongFrame(TypedDict):
    type: Literal["pong"]


class AuthFrame(TypedDict):
    type: Literal["auth"]
    expires_at: int


class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: str
    detail: str


SERVER_FRAMES: dict[str, Any] = {
    "notification": NotificationFrame,
    **{kind: StateFrame for kind in get_args(ItemState)},
    "interact": InteractFrame,
    "counts": CountsFrame,
    "refresh": RefreshFrame,
    "notifications_list": ListFrame,
    "read_all": UpdatedFrame,
    "seen_all": UpdatedFrame,
    "bulk": BulkFrame,
    "resumed": ResumedFrame,
    "pong": PongFrame,
    "auth": AuthFrame,
    "error": ErrorFrame,
}


def check(frame: dict[str, Any]) -> None:
    """Raise msgspec.ValidationError unless `frame` is a frame of its type."""
    kind = SERVER_FRAMES.get(frame.get("type", ""))
    if kind is None:
        raise msgspec.ValidationError(f"unknown frame type {frame.get('type')!r}")
    msgspec.convert(frame, kind)


def frame_schema() -> dict[str, Any]:
    """A JSON Schema of every server frame."""
    kinds = list(dict.fromkeys(SERVER_FRAMES.values()))
    refs, components = msgspec.json.schema_components(kinds, ref_template="#/$defs/{name}")
    return {"anyOf": list(refs), "$defs": components}
