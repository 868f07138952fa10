"""What sockets are told: the server's WebSocket frames, as JSON text.

A push of a new item is the hot path (one per recipient of every
notification): the notification's content is rendered once (`content`), and
each recipient's frame is its own head followed by it (`push`).
"""

from __future__ import annotations

from typing import Any

from .responses import dumps


def frame(kind: str, **fields: Any) -> str:
    """`{"type": kind, **fields}` as JSON text."""
    return dumps({"type": kind, **fields}).decode()


def item(item: dict) -> str:
    """The `notification` frame of an inbox item (the shape of citelink.inbox)."""
    return frame("notification", **item)


def content(notification: dict) -> str:
    """What every recipient of a notification is shown, without the opening
    brace: `push` puts each recipient's own head before it."""
    return dumps(notification | {"is_read": False, "read_at": None}).decode()[1:]


def push(item_id: int, position: int, content: str) -> str:
    """The `notification` frame of a new item, from its notification's `content`."""
    return f'{{"type":"notification","id":{item_id},"position":{position},{content}'


def counts(unread: int) -> str:
    return f'{{"type":"counts","unread":{unread}}}'


def state(kind: str, item_id: int) -> str:
    """A `read`, `unread` or `delete` frame."""
    return f'{{"type":"{kind}","id":{item_id}}}'


def error(code: str, detail: str) -> str:
    return frame("error", code=code, detail=detail)
