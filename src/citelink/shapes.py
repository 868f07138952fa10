"""The bodies the REST API answers with, as types.

Each handler's return annotation names one of these (citelink.api.endpoint
reads it), and /openapi.json's response schemas are generated from them by
msgspec (citelink.api.openapi), so the document cannot drift from what the
handlers declare; tests/api/test_api_openapi.py checks real answers against
both. They are TypedDicts: handlers build them from rows key by key (so a type
checker sees a missing or misspelt key) and orjson writes them, with no
conversion on the way out.

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
# A page's cursor.
Next = Annotated[
    int | None, Meta(description="pass as ?before= for the next page; null on the last")
]


class Error(TypedDict):
    detail: str
    errors: NotRequired[
        Annotated[dict[str, str], Meta(description="field or parameter → what is wrong with it")]
    ]


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
    external_id: Annotated[str | None, Meta(description="the platform's user id")]


class Users(TypedDict):
    users: list[User]


class ApiKey(TypedDict):
    id: Id
    name: str
    prefix: Annotated[str, Meta(description="names the key: cl_<prefix>_...")]
    scopes: list[Literal["publish", "admin"]]
    created_at: Timestamp
    revoked_at: When
    created_by: Annotated[Id | None, Meta(description="the staff user who made it")]
    created_by_key: Annotated[Id | None, Meta(description="the API key it was made with")]
    key: NotRequired[
        Annotated[str, Meta(description="the whole key: only in the answer that made it")]
    ]


class Tag(TypedDict):
    id: Id
    name: str
    critical: Annotated[bool, Meta(description="ignores mutes")]


class Subscription(TypedDict):
    id: Id
    user: Annotated[Id, Meta(description="user id")]
    tag: Annotated[Id, Meta(description="tag id")]
    mode: Literal["live", "inbox", "muted"]


class Notification(TypedDict):
    id: Id
    tag: Annotated[Id | None, Meta(description="tag id")]
    users: Annotated[
        list[Id] | None, Meta(description="the users it was addressed to, besides the tag's")
    ]
    message: str
    data: dict[str, Any]
    priority: Priority
    group_key: str | None
    group_window: Annotated[int, Meta(description="seconds")]
    send_at: When
    status: Annotated[
        Literal["scheduled", "delivered", "failed"],
        Meta(description="failed: waiting, its last delivery attempt failed (or it was given up)"),
    ]
    delivered_at: Annotated[When, Meta(description="null while it waits for send_at")]
    delivery_attempts: Annotated[int, Meta(description="failed delivery attempts")]
    delivery_error: Annotated[str | None, Meta(description="why the last attempt failed")]
    retry_at: Annotated[
        When, Meta(description="the next attempt after a failure; null once given up (10 attempts)")
    ]
    expires_at: When
    expired_at: Annotated[When, Meta(description="when its items were marked expired")]
    timestamp: Timestamp
    recipients: Annotated[int, Meta(description="inbox rows created (or updated, grouped)")]


class InboxItem(TypedDict):
    id: Annotated[Id, Meta(description="inbox item id (not the notification's)")]
    notification_id: Id
    tag: Annotated[
        Id | None, Meta(description="tag id; null for a notification to listed users only")
    ]
    tag_name: str | None
    message: str
    data: dict[str, Any]
    timestamp: Timestamp
    position: Annotated[
        Id, Meta(description="place in my order: 1, 2, 3, ... as items are committed")
    ]
    is_seen: bool
    seen_at: When
    is_read: bool
    read_at: When
    is_archived: bool
    archived_at: When
    interacted_at: When
    action: Annotated[str | None, Meta(description="the action clicked")]
    priority: Priority
    group_key: str | None
    count: Annotated[int, Meta(description="notifications the item collects (grouping)")]
    notification_ids: Annotated[
        list[Id] | None, Meta(description="the notifications a grouped item collects, oldest first")
    ]
    expires_at: When


class InboxCounts(TypedDict):
    unseen: Annotated[int, Meta(description="in the default list (neither deleted nor archived)")]
    unread: Annotated[int, Meta(description="in the default list")]
    total: Annotated[int, Meta(description="the default list")]
    archived: int


class Updated(TypedDict):
    updated: Annotated[int, Meta(description="items changed")]


class AuditEntry(TypedDict):
    id: Id
    timestamp: Timestamp
    resource: str
    object_id: int
    action: Literal["create", "update", "delete"]
    changes: Annotated[dict[str, tuple[Any, Any]], Meta(description="field → [old, new]")]
    actor: Annotated[Id | None, Meta(description="user id; null for plain SQL and API keys")]
    actor_key: Annotated[
        Id | None, Meta(description="API key id, when the change was made with a key")
    ]


class Page(TypedDict, Generic[T]):
    results: list[T]
    next: Next


class InboxPage(TypedDict):
    results: list[InboxItem]
    next: Next
    pinned: NotRequired[
        Annotated[
            list[InboxItem],
            Meta(
                description="first page of the default list: high-priority unread items, shown "
                "above the rest (and left out of `results`)"
            ),
        ]
    ]


class Health(TypedDict):
    status: Literal["ok", "unavailable"]
    database: NotRequired[bool]
    listener: NotRequired[Annotated[bool, Meta(description="the LISTEN connection is up")]]


# This document itself.
OpenAPI = Annotated[dict[str, Any], Meta(description="this document")]
