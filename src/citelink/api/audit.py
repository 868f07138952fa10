"""The audit trail (staff): written by the database's triggers, read here."""

from __future__ import annotations

import asyncpg

from citelink.api.endpoint import Call, endpoint
from citelink.api.validation import PAGE, Choice, Integer, Query, page, page_bounds
from citelink.db.queries import Q
from citelink.shapes import AuditEntry, Page

# The tables sql/triggers.sql audits.
RESOURCES = ("tag", "subscription", "notification", "user_notification", "users", "api_key")
FILTERS = Query(
    {
        **PAGE,
        "resource": Choice(choices=RESOURCES, description="the table changed"),
        "object_id": Integer(description="the id of the row changed"),
        "actor": Integer(description="the id of the user who made the change"),
        "actor_key": Integer(description="the id of the API key the change was made with"),
    }
)


def _entry(row: asyncpg.Record) -> AuditEntry:
    return {
        "id": row["id"],
        "timestamp": row["timestamp"],
        "resource": row["resource"],
        "object_id": row["object_id"],
        "action": row["action"],
        "changes": row["changes"],
        "actor": row["actor"],
        "actor_key": row["actor_key"],
    }


@endpoint("Audit entries, newest first", access="staff", query=FILTERS)
async def list_entries(call: Call) -> Page[AuditEntry]:
    q = call.query
    before, limit = page_bounds(q)
    rows = await call.pool.fetch(
        Q.audit_page,
        q.get("resource"),
        q.get("object_id"),
        q.get("actor"),
        before,
        limit + 1,
        q.get("actor_key"),
    )
    return page([_entry(r) for r in rows], limit)
