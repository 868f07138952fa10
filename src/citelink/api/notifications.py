"""Notifications: staff publish and read them back.

Publishing is one call of citelink_publish() (sql/triggers.sql), a transaction
of its own: the database fans the notification out to every subscriber's inbox
in it, so the 201 comes after every inbox row is committed, with the number of
recipients (kept on the notification row).
"""

from __future__ import annotations

import logging

import asyncpg

from ..errors import ApiError
from ..metrics import PUBLISH_SECONDS
from ..queries import Q
from .endpoint import Call, endpoint
from .validation import PAGE, Body, Integer, JsonObject, Query, String, page, page_bounds

log = logging.getLogger("citelink.api")

# A publish fails as a whole when it races the deletion of one of its
# recipients (sql/triggers.sql, "Inbox keys"): nothing was committed, so it is
# simply made again, against the subscribers as they are now.
PUBLISH_ATTEMPTS = 3

NEW_NOTIFICATION = Body(
    {
        "message": String(max_length="max_message_chars"),
        "tag": Integer(description="tag id"),
        "data": JsonObject(
            required=False, description="any JSON object, nested 100 levels at most (default {})"
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
