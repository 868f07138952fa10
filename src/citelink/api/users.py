"""Users: who am I (anyone signed in), list and create (staff)."""

from __future__ import annotations

import asyncpg

from citelink.api.endpoint import Call, endpoint
from citelink.api.user_refs import UserRefs, user_ids
from citelink.api.validation import PAGE, Body, Boolean, Query, String, page, page_bounds
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.shapes import Me, Page, User, Users

NEW_USER = Body(
    {
        # The CHECK on users.username, so a bad name is a 422, not a 500.
        "username": String(
            max_length=150,
            pattern=r"[A-Za-z0-9_.@+-]+",
            pattern_help="only letters, digits and @.+-_",
            description="unique whatever the case",
        ),
        "password": String(max_length=1024),
        "is_staff": Boolean(required=False, description="may publish and administer"),
    }
)


def _user(row: asyncpg.Record) -> User:
    return {
        "id": row["id"],
        "username": row["username"],
        "is_staff": row["is_staff"],
        "is_active": row["is_active"],
        "created_at": row["created_at"],
        "external_id": row["external_id"],
    }


@endpoint("The signed-in user")
async def me(call: Call) -> Me:
    return {"id": call.user_id, "username": call.me.username, "is_staff": call.me.is_staff}


@endpoint("List users", access="staff", query=Query(PAGE))
async def list_users(call: Call) -> Page[User]:
    before, limit = page_bounds(call.query)
    rows = await call.pool.fetch(Q.users_page, before, limit + 1)
    return page([_user(r) for r in rows], limit)


@endpoint(
    "Create a user",
    access="staff",
    body=NEW_USER,
    status=201,
    errors={409: "the username is taken (in any case)"},
)
async def create_user(call: Call) -> User:
    username = call.body["username"]
    password_hash = await call.passwords.hash(call.body["password"])
    try:
        async with call.transaction() as conn:
            row = await conn.fetchrow(
                Q.create_user, username, password_hash, call.body.get("is_staff", False)
            )
    except asyncpg.UniqueViolationError:
        raise ApiError(409, f"user {username!r} already exists") from None
    assert row is not None  # INSERT ... RETURNING: the row made
    return _user(row)


@endpoint(
    "The users of external ids (the platform's user ids), made for those not seen before "
    "unless CITELINK_PLATFORM_PROVISIONING is off",
    access="staff",
    body=Body({"external_ids": UserRefs(max_items=1000, description="'ext:<external id>' each")}),
    key_scope="publish",
    errors={422: "an external id names no user, and provisioning is off (the ids are named)"},
)
async def external_users(call: Call) -> Users:
    refs = call.body["external_ids"]
    if any(isinstance(r, int) for r in refs):
        raise ApiError(422, "invalid request body", {"external_ids": "give 'ext:<id>' each"})
    # The users made are audited as made by the caller (a staff user, a key).
    async with call.transaction() as conn:
        await user_ids(conn, call.settings, refs, "external_ids")
        rows = await conn.fetch(Q.external_users, refs)
    return {"users": [_user(r) for r in rows]}
