"""Notifications: staff publish and read them back.

Publishing is one call of citelink_publish() (sql/triggers.sql), a transaction
of its own: the database fans the notification out to every subscriber's inbox
in it, so the 201 comes after every inbox row is committed, with the number of
recipients (kept on the notification row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ..errors import ApiError
from ..metrics import PUBLISH_SECONDS
from ..queries import Q
from ..settings import Settings
from .endpoint import Call, endpoint
from .validation import (
    PAGE,
    Body,
    Integer,
    Invalid,
    JsonObject,
    Query,
    String,
    page,
    page_bounds,
)

log = logging.getLogger("citelink.api")

# A publish fails as a whole when it races the deletion of one of its
# recipients (sql/triggers.sql, "Inbox keys"): nothing was committed, so it is
# simply made again, against the subscribers as they are now.
PUBLISH_ATTEMPTS = 3

# What `data` may say about links: `url` (the item's own link) and `actions`,
# up to 3 buttons {id, label, url?}; the inbox renders them (citelink/web).
MAX_ACTIONS = 3
MAX_LINK = 2000
ACTION_FIELDS = {"id", "label", "url"}


def _link_problem(value: Any) -> str | None:
    """Why `value` is no link an inbox may open: http(s), or a path of the
    platform's own (`/...`); never javascript:, data: or the like."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_LINK:
        return f"must be a string of 1 to {MAX_LINK} characters"
    if value.startswith("/") and not value.startswith("//"):
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc and value == value.strip():
        return None
    return "must be an http(s) URL or a path starting with /"


def _label_problem(value: Any, field: str) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 100:
        return f"'{field}' must be a string of 1 to 100 characters"
    return None


@dataclass(frozen=True)
class NotificationData(JsonObject):
    """Any JSON object, with `url` and `actions` checked when present."""

    def check(self, value: Any, settings: Settings) -> dict:
        data = super().check(value, settings)
        if "url" in data and (problem := _link_problem(data["url"])):
            raise Invalid(f"url {problem}")
        actions = data.get("actions")
        if actions is None:
            return data
        if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_ACTIONS:
            raise Invalid(f"actions must be a list of 1 to {MAX_ACTIONS} actions")
        ids = set()
        for n, action in enumerate(actions):
            where = f"actions[{n}]"
            if not isinstance(action, dict):
                raise Invalid(f"{where} must be an object {{id, label, url?}}")
            if unknown := set(action) - ACTION_FIELDS:
                raise Invalid(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
            problem = _label_problem(action.get("id"), "id") or _label_problem(
                action.get("label"), "label"
            )
            if problem is None and "url" in action:
                problem = (p := _link_problem(action["url"])) and f"'url' {p}"
            if problem:
                raise Invalid(f"{where}: {problem}")
            if action["id"] in ids:
                raise Invalid(f"{where}: the id {action['id']!r} is used twice")
            ids.add(action["id"])
        return data


NEW_NOTIFICATION = Body(
    {
        "message": String(max_length="max_message_chars"),
        "tag": Integer(description="tag id"),
        "data": NotificationData(
            required=False,
            description="any JSON object, nested 100 levels at most (default {}); its "
            "`url` (http(s) or a /path) is the item's link, its `actions` (up to 3 "
            "{id, label, url?}) the item's buttons",
        ),
    }
)


@endpoint(
    "Publish a notification to every subscriber of a tag",
    access="staff",
    body=NEW_NOTIFICATION,
    status=201,
    response="Notification",
)
async def publish(call: Call) -> dict:
    body = call.body
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            with PUBLISH_SECONDS.time():
                row = await call.pool.fetchrow(
                    Q.publish, body["tag"], body["message"], body.get("data", {}), call.me.id
                )
            break
        except asyncpg.ForeignKeyViolationError as exc:
            if exc.constraint_name == "notification_tag_id_fkey":
                raise ApiError(422, "invalid request body", {"tag": "no such tag"}) from None
            lost = exc
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
            lost = exc
        log.info("publish attempt %d lost a race (%s); retrying", attempt, type(lost).__name__)
    else:
        raise ApiError(503, "the recipients kept changing while publishing; try again")
    return {
        "id": row["id"],
        "tag": row["tag_id"],
        "message": row["message"],
        "data": row["data"],
        "timestamp": row["created_at"],
        "recipients": row["recipients"],
    }


@endpoint(
    "List published notifications, newest first",
    access="staff",
    query=Query({**PAGE, "tag": Integer(description="only this tag's")}),
    response="Page[Notification]",
)
async def list_notifications(call: Call) -> dict:
    before, limit = page_bounds(call.query)
    rows = await call.pool.fetch(Q.notifications_page, call.query.get("tag"), before, limit + 1)
    return page([dict(r) for r in rows], limit)


@endpoint("One published notification", access="staff", response="Notification")
async def get_notification(call: Call) -> dict:
    row = await call.pool.fetchrow(Q.notification_by_id, call.id)
    if row is None:
        raise ApiError(404, "no such notification")
    return dict(row)
