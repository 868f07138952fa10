"""Subscriptions: users manage their own, staff anyone's.

POST takes `{tag}` (subscribe myself) or the seed's `{user, tag}`; a user
who is not staff may only name themself there.
"""

from __future__ import annotations

import asyncpg

from citelink.api.endpoint import Call, endpoint
from citelink.api.user_refs import UserRef, user_ids
from citelink.api.validation import PAGE, Body, Choice, Integer, Query, page, page_bounds
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.shapes import Page, Subscription

MODE = Choice(
    choices=("live", "inbox", "muted"),
    description="live (stored and pushed, the default), inbox (stored, not pushed), "
    "muted (stored, not counted as unseen or unread, not pushed)",
)
NEW_SUBSCRIPTION = Body(
    {
        "tag": Integer(description="tag id"),
        "user": UserRef(
            required=False,
            description="user id or 'ext:<external id>' (default: me; others: staff "
            "only; an API key must name one)",
        ),
        "mode": Choice(choices=MODE.choices, required=False, description=MODE.description),
    }
)
FILTERS = Query(
    {
        **PAGE,
        "user": Integer(description="only this user's (staff; others may name only themselves)"),
        "tag": Integer(description="only this tag's"),
    }
)


def _subscription(row: asyncpg.Record) -> Subscription:
    return {"id": row["id"], "user": row["user"], "tag": row["tag"], "mode": row["mode"]}


def _unknown(field: str) -> ApiError:
    return ApiError(422, "invalid request body", {field: f"no such {field}"})


@endpoint(
    "List subscriptions: my own, or everyone's for staff",
    query=FILTERS,
    key_scope="publish",
)
async def list_subscriptions(call: Call) -> Page[Subscription]:
    user = call.query.get("user")
    if not call.me.manages_others:
        if user not in (None, call.me.id):
            raise ApiError(403, "only staff may list another user's subscriptions")
        user = call.me.id
    before, limit = page_bounds(call.query)
    rows = await call.pool.fetch(
        Q.subscriptions_page, user, call.query.get("tag"), before, limit + 1
    )
    return page([_subscription(r) for r in rows], limit)


@endpoint(
    "Subscribe a user (default: me) to a tag",
    body=NEW_SUBSCRIPTION,
    status=201,
    errors={409: "already subscribed, or the user's subscription limit is reached"},
    key_scope="publish",
)
async def create_subscription(call: Call) -> Subscription:
    tag = call.body["tag"]
    given = call.body.get("user", call.me.id)
    if given is None:  # an API key is no user: none was named
        raise ApiError(422, "invalid request body", {"user": "an API key must name the user"})
    if given != call.me.id and not call.me.manages_others:
        raise ApiError(403, "only staff may subscribe another user")
    limit = call.settings.max_subscriptions_per_user
    try:
        async with call.transaction() as conn:
            # A user made for a new external id is audited as the caller's, and
            # made only if the subscription is.
            [user] = await user_ids(conn, call.settings, [given], "user")
            held = await conn.fetchval(Q.lock_subscriber, user)
            if held is None:
                raise _unknown("user")
            if held >= limit:
                raise ApiError(409, f"a user may hold at most {limit} subscriptions")
            row = await conn.fetchrow(
                Q.create_subscription, user, tag, call.body.get("mode", "live")
            )
    except asyncpg.ForeignKeyViolationError:
        raise _unknown("tag") from None
    if row is None:
        raise ApiError(409, "already subscribed to this tag")
    return _subscription(row)


@endpoint("Unsubscribe (the owner, or staff)", status=204, key_scope="publish")
async def delete_subscription(call: Call) -> None:
    owner = None if call.me.manages_others else call.me.id
    async with call.transaction() as conn:
        deleted = await conn.fetchval(Q.delete_subscription, call.id, owner)
    if deleted is None:
        raise ApiError(404, "no such subscription")


@endpoint(
    "Set how a subscription delivers (the owner, or staff)",
    body=Body({"mode": MODE}),
    key_scope="publish",
)
async def update_subscription(call: Call) -> Subscription:
    owner = None if call.me.manages_others else call.me.id
    async with call.transaction() as conn:
        row = await conn.fetchrow(Q.set_subscription_mode, call.id, call.body["mode"], owner)
    if row is None:
        raise ApiError(404, "no such subscription")
    return _subscription(row)
