"""The bodies the REST API answers with, as types.

Each handler's return annotation names one of these (citelink.api.endpoint
reads it), and /openapi.json's response schemas are generated from them by
msgspec (citelink.api.openapi), so the document cannot drift from what the
handlers declare; tests/test_api_openapi.py checks real answers against both.
They are TypedDicts: handlers build plain dicts from rows and orjson writes
them, with no conversion on the way out.

Timestamps are ISO 8601 strings; one that Python cannot hold (BC, past the
year 9999, infinity) is the text PostgreSQL writes (citelink.db.decoding).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, NotRequired, TypedDict, TypeVar

from msgspec import Meta

T = TypeVar("T")

Id = Annotated[int, Meta(ge=1)]
# On the wire a timestamp is text: ISO 8601, or what PostgreSQL writes for
# one outside years 1 to 9999 (see the module docstring).
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
When = Timestamp | None
Priority = Literal["low", "normal", "high"]


def _doc(kind: Any, description: str) -> Any:
    return Annotated[kind, Meta(description=description)]


class Error(TypedDict):
    detail: str
    errors: NotRequired[_doc(dict[str, str], "field or parameter → what is wrong with it")]


class Empty(TypedDict):
    """Nothing to tell beyond the status."""


class TokenPair(TypedDict):
    access: str
    refresh: str


class Me(TypedDict):
    id: Id
    username: str
    is_staff: bool


class User(TypedDict):
    id: Id
    username: str
    is_staff: bool
    is_active: bool
    created_at: Timestamp
    external_id: _doc(str | None, "the platform's user id")


class Users(TypedDict):
    users: list[User]


class ApiKey(TypedDict):
    id: Id
    name: str
    prefix: _doc(str, "names the key: cl_<prefix>_...")
    scopes: list[Literal["publish", "admin"]]
    created_at: Timestamp
    revoked_at: When
    created_by: _doc(Id | None, "user id")
    key: NotRequired[_doc(str, "the whole key: only in the answer that made it")]


class Tag(TypedDict):
    id: Id
    name: str
    critical: _doc(bool, "ignores mutes")


class Subscription(TypedDict):
    id: Id
    user: _doc(Id, "user id")
    tag: _doc(Id, "tag id")
    mode: Literal["live", "inbox", "muted"]


class Notification(TypedDict):
    id: Id
    tag: _doc(Id | None, "tag id")
    users: _doc(list[Id] | None, "the users it was addressed to, besides the tag's")
    message: str
    data: dict[str, Any]
    priority: Priority
    group_key: str | None
    group_window: _doc(int, "seconds")
    send_at: When
    delivered_at: _doc(When, "null while it waits for send_at")
    expires_at: When
    expired_at: _doc(When, "when its items were marked expired")
    timestamp: Timestamp
    recipients: _doc(int, "inbox rows created (or updated, grouped)")


class InboxItem(TypedDict):
    id: _doc(Id, "inbox item id (not the notification's)")
    notification_id: Id
    tag: _doc(Id | None, "tag id; null for a notification to listed users only")
    tag_name: str | None
    message: str
    data: dict[str, Any]
    timestamp: Timestamp
    position: _doc(Id, "place in my order: 1, 2, 3, ... as items are committed")
    is_seen: bool
    seen_at: When
    is_read: bool
    read_at: When
    is_archived: bool
    archived_at: When
    interacted_at: When
    action: _doc(str | None, "the action clicked")
    priority: Priority
    group_key: str | None
    count: _doc(int, "notifications the item collects (grouping)")
    notification_ids: _doc(
        list[Id] | None, "the notifications a grouped item collects, oldest first"
    )
    expires_at: When


class InboxCounts(TypedDict):
    unseen: _doc(int, "in the default list (neither deleted nor archived)")
    unread: _doc(int, "in the default list")
    total: _doc(int, "the default list")
    archived: int


class Updated(TypedDict):
    updated: _doc(int, "items changed")


class AuditEntry(TypedDict):
    id: Id
    timestamp: Timestamp
    resource: str
    object_id: int
    action: Literal["create", "update", "delete"]
    changes: _doc(dict[str, tuple[Any, Any]], "field → [old, new]")
    actor: _doc(Id | None, "user id; null for plain SQL and API keys")
    actor_key: _doc(Id | None, "API key id, when the change was made with a key")


class Page(TypedDict, Generic[T]):
    results: list[T]
    next: _doc(int | None, "pass as ?before= for the next page; null on the last")


class InboxPage(TypedDict):
    results: list[InboxItem]
    next: _doc(int | None, "pass as ?before= for the next page; null on the last")
    pinned: NotRequired[
        _doc(
            list[InboxItem],
            "first page of the default list: high-priority unread items, shown above "
            "the rest (and left out of `results`)",
        )
    ]


class Health(TypedDict):
    status: Literal["ok", "unavailable"]
    database: NotRequired[bool]
    listener: NotRequired[_doc(bool, "the LISTEN connection is up")]


# This document itself.
OpenAPI = _doc(dict[str, Any], "this document")
