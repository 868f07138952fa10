"""Notifications: staff publish and read them back.

Publishing is one call of citelink_publish() (sql/triggers.sql), a transaction
of its own: the database fans the notification out to every subscriber's inbox
in it, so the 201 comes after every inbox row is committed, with the number of
recipients (kept in notification_recipients by the fan-out).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg

from citelink.api.endpoint import Call, endpoint
from citelink.api.user_refs import UserRefs, user_ids
from citelink.api.validation import (
    PAGE,
    Body,
    Choice,
    Integer,
    Invalid,
    JsonObject,
    Query,
    String,
    Timestamp,
    page,
    page_bounds,
)
from citelink.db.connection import CONNECTION_LOST, UNAVAILABLE
from citelink.db.group_commit import GroupCommit
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.identity.callers import CallerUnconfirmed
from citelink.metrics import PUBLISH_SECONDS
from citelink.settings import Settings
from citelink.shapes import Notification, Page

log = logging.getLogger("citelink.api")

# A publish fails as a whole when it races the deletion of one of its
# recipients (sql/triggers.sql, "Inbox keys"): nothing was committed, so it is
# simply made again, against the subscribers as they are now.
PUBLISH_ATTEMPTS = 3
Publishes = GroupCommit[asyncpg.Record]

# What `data` may say about links: `url` (the item's own link) and `actions`,
# up to 3 buttons {id, label, url?}; the inbox renders them (citelink/web/page).
MAX_ACTIONS = 3
# Listed recipients of one notification (notification.users has the same bound).
MAX_USERS = 10_000
MAX_LINK = 2000
ACTION_FIELDS = {"id", "label", "url"}


# What a browser drops from a URL or reads as a slash: `/\host` and
# `/<tab>/host` are `//host`, another site. The same rule is in the web page
# (citelink/web/page/app.js) and the element (citelink/web/element), which
# check again what plain SQL wrote.
_UNSAFE_IN_LINK = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
LINK_RULE = (
    "must be an http(s) URL with a host, or a path starting with a single / "
    "(no backslash, control character or surrounding space)"
)


def _is_link(value: str) -> bool:
    """http(s) with a host, or a path of the platform's own that cannot become
    another host; never javascript:, data: or the like."""
    if _UNSAFE_IN_LINK.search(value) or value.startswith(" ") or value.endswith(" "):
        return False
    if value.startswith("/"):
        return not value.startswith("//")
    # The host right after the `//` (a browser reads `https:///host` as `https://host`).
    if not re.match(r"https?://[^/]", value, re.IGNORECASE):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises for a port out of range, as browsers refuse it)
    except ValueError:  # a bad IPv6 literal ("http://[x") or port
        return False
    # What a browser takes for a host: no space or <>^| in it.
    return bool(parts.hostname) and not re.search(r"[ <>^|]", parts.hostname or "")


def _link_problem(value: Any) -> str | None:
    """Why `value` is no link an inbox may open (_is_link), or None."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_LINK:
        return f"must be a string of 1 to {MAX_LINK} characters"
    return None if _is_link(value) else LINK_RULE


def _label_problem(value: Any, field: str) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 100:
        return f"'{field}' must be a string of 1 to 100 characters"
    return None


@dataclass(frozen=True)
class NotificationData(JsonObject):
    """Any JSON object, with `url` and `actions` checked when present."""

    def check(self, value: Any, settings: Settings) -> dict[str, Any]:
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
        "tag": Integer(required=False, description="tag id: its subscribers get it"),
        "users": UserRefs(
            required=False,
            max_items=MAX_USERS,
            description="users who get it too (or only they, without a tag), by id or "
            "as 'ext:<external id>'; once each",
        ),
        "data": NotificationData(
            required=False,
            description="any JSON object, nested 100 levels at most (default {}); its "
            "`url` (http(s) with a host, or a /path without a backslash, control "
            "character or second / at the start) is the item's link, its `actions` "
            "(up to 3 {id, label, url?}) the item's buttons",
        ),
        "priority": Choice(
            choices=("low", "normal", "high"),
            required=False,
            description="default normal; high items are pinned to the top of the inbox",
        ),
        "group_key": String(
            required=False,
            max_length=200,
            description="a recipient's unread item of the same key from the last "
            "group_window is updated in place instead of a new one made",
        ),
        "group_window": Integer(
            required=False, maximum=30 * 86400, description="seconds (default 600)"
        ),
        "send_at": Timestamp(required=False, description="deliver at this time, not now"),
        "expires_at": Timestamp(
            required=False, description="after it, its items leave lists and counts"
        ),
    }
)
STATUSES = {
    "scheduled": "delivered_at IS NULL AND delivery_error IS NULL",
    "failed": "delivered_at IS NULL AND delivery_error IS NOT NULL",
    "delivered": "delivered_at IS NOT NULL",
    "expired": "expired_at IS NOT NULL",
}


def _notification(row: asyncpg.Record) -> Notification:
    """A notification as the API shows it (`tag` the tag id, `timestamp` created_at)."""
    return {
        "id": row["id"],
        "users": row["users"],
        "message": row["message"],
        "data": row["data"],
        "priority": row["priority"],
        "group_key": row["group_key"],
        "group_window": int(row["group_window"].total_seconds()),
        "send_at": row["send_at"],
        "status": _status(row),
        "delivered_at": row["delivered_at"],
        "delivery_attempts": row["delivery_attempts"],
        "delivery_error": row["delivery_error"],
        # Given up: 'infinity' in the database, no next attempt here.
        "retry_at": None if row["retry_at"] == "infinity" else row["retry_at"],
        "expires_at": row["expires_at"],
        "expired_at": row["expired_at"],
        "recipients": row["recipients"],
        "tag": row["tag_id"],
        "timestamp": row["created_at"],
    }


def _status(row: asyncpg.Record) -> Literal["scheduled", "delivered", "failed"]:
    """As STATUSES says."""
    if row["delivered_at"] is not None:
        return "delivered"
    return "scheduled" if row["delivery_error"] is None else "failed"


async def _check(call: Call) -> list[int] | None:
    """The listed users' ids; 422 for what the database would refuse less
    clearly: no recipients at all, times in the wrong order, unknown users
    (each named)."""
    body = call.body
    if "tag" not in body and "users" not in body:
        raise ApiError(422, "invalid request body", {"tag": "give a tag, users, or both"})
    send_at, expires_at = body.get("send_at"), body.get("expires_at")
    if expires_at is not None and expires_at <= (send_at or datetime.now(UTC)):
        raise ApiError(
            422, "invalid request body", {"expires_at": "must be after the notification is sent"}
        )
    if "group_window" in body and "group_key" not in body:
        raise ApiError(422, "invalid request body", {"group_window": "needs a group_key"})
    if "users" not in body:
        return None
    if call.settings.platform_provisioning and any(isinstance(r, str) for r in body["users"]):
        # Users made for new external ids are audited as made by the caller.
        async with call.transaction() as conn:
            users = await user_ids(conn, call.settings, body["users"], "users")
    else:
        users = await user_ids(call.pool, call.settings, body["users"], "users")
    unknown = await call.pool.fetchval(Q.unknown_users, users)
    if unknown:
        listed = ", ".join(map(str, unknown[:20])) + (" ..." if len(unknown) > 20 else "")
        raise ApiError(422, "invalid request body", {"users": f"no such users: {listed}"})
    return users


@endpoint(
    "Publish a notification to the subscribers of a tag, to listed users, or both",
    access="staff",
    body=NEW_NOTIFICATION,
    status=201,
    key_scope="publish",
    confirms_caller=True,
)
async def publish(call: Call) -> Notification:
    if call.me.unconfirmed is not None and "users" in call.body:
        # Listed users take statements of their own: the caller comes first.
        raise CallerUnconfirmed
    users = await _check(call)
    body = call.body
    window = body.get("group_window")
    args = (
        body.get("tag"),
        users,
        body["message"],
        body.get("data", {}),
        body.get("priority"),
        body.get("group_key"),
        timedelta(seconds=window) if window else None,
        body.get("send_at"),
        body.get("expires_at"),
        call.me.id,
    )
    lost: asyncpg.PostgresError
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            with PUBLISH_SECONDS.time():
                row = await _publish_once(call, args)
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
    return _notification(row)


async def _publish_once(call: Call, args: tuple[Any, ...]) -> asyncpg.Record:
    users, group_key = args[1], args[5]
    if users is None and group_key is None:
        # Shares a statement with other publishes of this caller waiting then.
        publishes: Publishes = call.request.state.publishes
        key = (call.me.id, call.me.api_key, call.me.unconfirmed)
        return await publishes.run(key, (call, args))
    return await _publish_alone((call, args))


async def _publish_alone(job: tuple[Call, tuple[Any, ...]]) -> asyncpg.Record:
    call, args = job
    if call.me.unconfirmed is not None:
        # The caller's check and the publish in one statement (no row: neither);
        # the last of `args`, the actor, is the caller's id.
        row = await call.pool.fetchrow(Q.publish_confirming, *args, call.me.unconfirmed)
        if row is None:
            raise CallerUnconfirmed
    elif call.me.api_key is None:
        # One statement, committed as it returns (citelink_publish sets the actor).
        row = await call.pool.fetchrow(Q.publish, *args)
    else:
        # The key is the audit actor: a setting of the transaction, as the user is.
        async with call.transaction() as conn:
            row = await conn.fetchrow(Q.publish, *args)
    assert row is not None  # citelink_publish answers the notification it made
    return row


async def _publish_together(jobs: list[tuple[Call, tuple[Any, ...]]]) -> list[asyncpg.Record]:
    """Publishes of one caller (no listed users, no group key) in one statement."""
    call = jobs[0][0]
    columns = [list(c) for c in zip(*(args for _, args in jobs), strict=True)]
    tags, _, messages, data, priorities, _, _, send_ats, expires_ats, _ = columns
    arrays = (tags, messages, data, priorities, send_ats, expires_ats)
    if call.me.unconfirmed is not None:
        rows = await call.pool.fetch(
            Q.publish_many_confirming, *arrays, call.me.id, call.me.unconfirmed
        )
        if not rows:
            raise CallerUnconfirmed
    elif call.me.api_key is None:
        rows = await call.pool.fetch(Q.publish_many, *arrays, call.me.id)
    else:
        async with call.transaction() as conn:
            rows = await conn.fetch(Q.publish_many, *arrays, None)
    return rows


def _one_of_them(exc: Exception) -> bool:
    """Whether a failed shared statement may have failed for one publish of
    it (then each runs alone): the database refused it and rolled it back.
    Not when the connection was lost (it may have committed), nor when the
    database was unavailable or cut it by a timeout: that is everyone's."""
    return isinstance(exc, CallerUnconfirmed) or (
        isinstance(exc, asyncpg.PostgresError)
        and not isinstance(exc, (*UNAVAILABLE, *CONNECTION_LOST))
    )


def group_commit() -> Publishes:
    """The app's group commit of publishes (citelink.db.group_commit)."""
    return GroupCommit(_publish_alone, _publish_together, _one_of_them)


@endpoint(
    "List published notifications, newest first",
    access="staff",
    query=Query(
        {
            **PAGE,
            "tag": Integer(description="only this tag's"),
            "status": Choice(
                choices=tuple(STATUSES),
                description="scheduled (waiting for send_at), failed (waiting after a "
                "failed delivery, or given up), delivered, expired",
            ),
        }
    ),
)
async def list_notifications(call: Call) -> Page[Notification]:
    before, limit = page_bounds(call.query)
    query = _PAGES[call.query.get("status")]
    rows = await call.pool.fetch(query, call.query.get("tag"), before, limit + 1)
    return page([_notification(r) for r in rows], limit)


_PAGES: dict[str | None, str] = {
    None: Q.notifications_page.replace("/*status*/", "true"),
    **{name: Q.notifications_page.replace("/*status*/", cond) for name, cond in STATUSES.items()},
}


@endpoint("One published notification", access="staff")
async def get_notification(call: Call) -> Notification:
    row = await call.pool.fetchrow(Q.notification_by_id, call.id)
    if row is None:
        raise ApiError(404, "no such notification")
    return _notification(row)


@endpoint(
    "Cancel a scheduled notification (before it is delivered)",
    access="staff",
    status=204,
    errors={409: "already delivered: its items are in inboxes"},
)
async def cancel_notification(call: Call) -> None:
    async with call.transaction() as conn:
        deleted = await conn.fetchval(Q.cancel_notification, call.id)
        if deleted is None and await conn.fetchval(Q.notification_by_id, call.id) is not None:
            raise ApiError(409, "the notification was delivered already; it cannot be cancelled")
    if deleted is None:
        raise ApiError(404, "no such notification")
