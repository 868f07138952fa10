"""Tags: anyone signed in reads them, staff create, rename, mark critical and
delete them. A critical tag's notifications reach every subscriber live,
whatever their preference (subscription mode)."""

from __future__ import annotations

import asyncpg

from citelink.api.endpoint import Call, endpoint
from citelink.api.validation import PAGE, Body, Boolean, Query, String, page, page_bounds
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.shapes import Page, Tag

NAME = String(max_length=100)
CRITICAL = Boolean(required=False, description="ignores subscribers' mutes (default false)")


def _tag(row: asyncpg.Record) -> Tag:
    return {"id": row["id"], "name": row["name"], "critical": row["critical"]}


def _taken(name: str) -> ApiError:
    return ApiError(409, f"a tag named {name!r} already exists")


@endpoint("List tags", query=Query(PAGE), key_scope="publish")
async def list_tags(call: Call) -> Page[Tag]:
    before, limit = page_bounds(call.query)
    rows = await call.pool.fetch(Q.tags_page, before, limit + 1)
    return page([_tag(r) for r in rows], limit)


@endpoint(
    "Create a tag",
    access="staff",
    body=Body({"name": NAME, "critical": CRITICAL}),
    status=201,
    errors={409: "a tag of that name exists"},
    key_scope="publish",
)
async def create_tag(call: Call) -> Tag:
    name = call.body["name"]
    try:
        async with call.transaction() as conn:
            row = await conn.fetchrow(Q.create_tag, name, call.body.get("critical", False))
    except asyncpg.UniqueViolationError:
        raise _taken(name) from None
    assert row is not None  # INSERT ... RETURNING: the row made
    return _tag(row)


@endpoint("One tag", key_scope="publish")
async def get_tag(call: Call) -> Tag:
    row = await call.pool.fetchrow(Q.tag_by_id, call.id)
    if row is None:
        raise ApiError(404, "no such tag")
    return _tag(row)


@endpoint(
    "Rename a tag, or mark it critical or not",
    access="staff",
    body=Body({"name": String(required=False, max_length=100), "critical": CRITICAL}),
    errors={409: "a tag of that name exists"},
    key_scope="publish",
)
async def update_tag(call: Call) -> Tag:
    name = call.body.get("name")
    if not call.body:
        raise ApiError(422, "invalid request body", {"name": "give a name, critical, or both"})
    try:
        async with call.transaction() as conn:
            row = await conn.fetchrow(Q.update_tag, call.id, name, call.body.get("critical"))
    except asyncpg.UniqueViolationError:
        raise _taken(name or "") from None
    if row is None:
        raise ApiError(404, "no such tag")
    return _tag(row)


@endpoint(
    "Delete a tag and its subscriptions",
    access="staff",
    status=204,
    errors={409: "notifications were published on the tag; inboxes keep them"},
    key_scope="publish",
)
async def delete_tag(call: Call) -> None:
    try:
        async with call.transaction() as conn:
            deleted = await conn.fetchval(Q.delete_tag, call.id)
    # ON DELETE RESTRICT: PostgreSQL 18 reports restrict_violation, earlier
    # versions foreign_key_violation.
    except (asyncpg.RestrictViolationError, asyncpg.ForeignKeyViolationError):
        raise ApiError(
            409, "the tag has notifications and cannot be deleted (inboxes keep their history)"
        ) from None
    if deleted is None:
        raise ApiError(404, "no such tag")
