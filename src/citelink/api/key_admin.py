"""API keys (staff): make one (its whole key is in this answer only), list
them (prefix, never the hash), revoke one. See citelink/identity/api_keys.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from citelink.api.endpoint import Call, endpoint
from citelink.api.validation import (
    PAGE,
    Body,
    Field,
    Invalid,
    Query,
    Schema,
    String,
    page,
    page_bounds,
)
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.identity import api_keys
from citelink.settings import Settings
from citelink.shapes import ApiKey, Page


@dataclass(frozen=True)
class Scopes(Field):
    def check(self, value: Any, settings: Settings) -> list[str]:
        if not isinstance(value, list) or not value or any(v not in api_keys.SCOPES for v in value):
            raise Invalid(f"must be a list of one or more of: {', '.join(api_keys.SCOPES)}")
        return sorted(set(value))

    def schema(self, settings: Settings) -> Schema:
        items = {"type": "string", "enum": list(api_keys.SCOPES)}
        return self._described({"type": "array", "items": items, "minItems": 1})


def _key(row: asyncpg.Record) -> ApiKey:
    """A key as listed: its prefix names it, its hash is never shown."""
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": row["scopes"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
        "created_by": row["created_by"],
        "created_by_key": row["created_by_key"],
    }


NEW_KEY = Body(
    {
        "name": String(max_length=100, description="what the key is for"),
        "scopes": Scopes(
            required=False,
            description="publish (notifications, tags, subscriptions, users by external "
            "id) and/or admin (everything staff may do); default publish",
        ),
    }
)


@endpoint(
    "Make an API key; the answer holds the whole key, shown this once",
    access="staff",
    body=NEW_KEY,
    status=201,
)
async def create_key(call: Call) -> ApiKey:
    made = api_keys.new_key()
    async with call.transaction() as conn:
        row = await conn.fetchrow(
            Q.create_api_key,
            call.body["name"],
            made.prefix,
            made.digest,
            call.body.get("scopes", ["publish"]),
            call.me.id,
            call.me.api_key,
        )
    assert row is not None  # INSERT ... RETURNING: the row made
    key = _key(row)
    key["key"] = made.key
    return key


@endpoint(
    "List API keys (prefixes, never the keys)",
    access="staff",
    query=Query(PAGE),
)
async def list_keys(call: Call) -> Page[ApiKey]:
    before, limit = page_bounds(call.query)
    rows = await call.pool.fetch(Q.api_keys_page, before, limit + 1)
    return page([_key(r) for r in rows], limit)


@endpoint("Revoke an API key: it fails from the next request on", access="staff", status=204)
async def revoke_key(call: Call) -> None:
    async with call.transaction() as conn:
        revoked = await conn.fetchrow(Q.revoke_api_key, call.id, None)
    if revoked is None:
        raise ApiError(404, "no such API key")
