"""The caller's own inbox over REST (citelink.db.inbox_store does the work, shared with
the WebSocket relay). Another user's item is a 404, exactly like a missing one."""

from __future__ import annotations

from typing import Any

from citelink.api.endpoint import Call, endpoint
from citelink.api.validation import (
    PAGE,
    Body,
    Boolean,
    Choice,
    DataFilter,
    Integer,
    Integers,
    JsonText,
    Object,
    Query,
    String,
    Timestamp,
    page_bounds,
)
from citelink.db import inbox_store
from citelink.errors import ApiError
from citelink.shapes import InboxCounts, InboxItem, InboxPage, Updated

STATUS = Choice(
    choices=tuple(inbox_store.STATUS),
    description="all (the default list: not archived), unseen, unread, read, archived",
)
TAGS = Integers(description="only items of these tags (ids; repeat the parameter for several)")
SINCE = Timestamp(description="only items published at or after this time")
UNTIL = Timestamp(description="only items published before this time")
# The filters of a query string...
FILTERS = {
    "status": STATUS,
    "tag": TAGS,
    "data": JsonText(
        description="only items whose data contains this JSON object (at most 1,024 bytes, "
        "4 levels, 16 keys or values per object or array)"
    ),
    "since": SINCE,
    "until": UNTIL,
}
NARROWING = {name: field for name, field in FILTERS.items() if name != "status"}
# ...and of a body (bulk actions), with `data` as a JSON object.
FILTER = Body(
    {
        "status": Choice(choices=STATUS.choices, required=False),
        "tag": Integers(required=False),
        "data": DataFilter(required=False),
        "since": Timestamp(required=False),
        "until": Timestamp(required=False),
    }
)


def filter_of(values: dict[str, Any]) -> inbox_store.Filter:
    """The inbox filter of validated FILTERS (or FILTER) values."""
    return inbox_store.Filter(
        status=values.get("status", "all"),
        tags=values.get("tag"),
        data=values.get("data"),
        since=values.get("since"),
        until=values.get("until"),
    )


def _not_found() -> ApiError:
    return ApiError(404, "no such inbox item")


@endpoint(
    "My inbox, newest first in my order: the default list, or by status and filters",
    query=Query(
        {
            **PAGE,
            "before": Integer(
                description="only items older than this item, in my order (the `next` of a page)"
            ),
            **FILTERS,
        }
    ),
)
async def list_items(call: Call) -> InboxPage:
    _, limit = page_bounds(call.query)
    where, before = filter_of(call.query), call.query.get("before")
    # High-priority unread items are pinned: listed apart, on the first page.
    found = await inbox_store.listing(
        call.pool,
        call.user_id,
        before=before,
        limit=limit,
        where=where,
        window=call.settings.filter_window,
    )
    answer: InboxPage = {"results": found.items, "next": found.next}
    if found.pinned is not None:
        answer["pinned"] = found.pinned
    return answer


@endpoint(
    "My counts: unseen, unread and total in the default list, and archived "
    "(of the items the filters select, if any)",
    query=Query(NARROWING),
)
async def counts(call: Call) -> InboxCounts:
    return await inbox_store.counts(call.pool, call.user_id, filter_of(call.query))


@endpoint("One item of my inbox")
async def get_item(call: Call) -> InboxItem:
    item = await inbox_store.get(call.pool, call.user_id, call.id)
    if item is None:
        raise _not_found()
    return item


@endpoint(
    "Mark one item seen, read or unread, archived or not (reading implies seen)",
    body=Body(
        {
            "is_seen": Boolean(required=False),
            "is_read": Boolean(required=False),
            "is_archived": Boolean(required=False),
        }
    ),
)
async def update_item(call: Call) -> InboxItem:
    if not call.body:
        raise ApiError(
            422, "invalid request body", {"is_read": "give is_seen, is_read or is_archived"}
        )
    if not await inbox_store.set_state(call.pool, call.user_id, call.id, **call.body):
        raise _not_found()
    return await _current(call)


async def _current(call: Call) -> InboxItem:
    item = await inbox_store.get(call.pool, call.user_id, call.id)
    if item is None:  # deleted in between
        raise _not_found()
    return item


@endpoint(
    "Record a click on one item's link, or on one of its actions (implies read)",
    body=Body({"action": String(required=False, max_length=100, description="the action's id")}),
    errors={422: "the notification has no action of that id"},
)
async def interact(call: Call) -> InboxItem:
    item = await inbox_store.get(call.pool, call.user_id, call.id)
    if item is None:
        raise _not_found()
    action = call.body.get("action")
    if action is not None and action not in inbox_store.action_ids(item):
        raise ApiError(422, "invalid request body", {"action": "no such action on this item"})
    if not await inbox_store.interact(call.pool, call.user_id, call.id, action):
        raise _not_found()
    return await _current(call)


@endpoint("Delete one item (soft: the row stays, marked deleted)", status=204)
async def delete_item(call: Call) -> None:
    if not await inbox_store.delete(call.pool, call.user_id, call.id):
        raise _not_found()


@endpoint(
    "Mark every unread item the filters select read",
    query=Query(FILTERS),
    bulk=True,
)
async def read_all(call: Call) -> Updated:
    return {
        "updated": await inbox_store.bulk(call.pool, call.user_id, "read", filter_of(call.query))
    }


@endpoint(
    "Mark every unseen item the filters select seen (the badge goes to 0)",
    query=Query(FILTERS),
    bulk=True,
)
async def seen_all(call: Call) -> Updated:
    return {
        "updated": await inbox_store.bulk(call.pool, call.user_id, "seen", filter_of(call.query))
    }


@endpoint(
    "One action on every item a filter selects, in one statement",
    body=Body(
        {
            "action": Choice(choices=tuple(inbox_store.ACTIONS)),
            "filter": Object(fields=FILTER, required=False, description="default: everything"),
        }
    ),
    bulk=True,
)
async def bulk(call: Call) -> Updated:
    where = filter_of(call.body.get("filter", {}))
    return {"updated": await inbox_store.bulk(call.pool, call.user_id, call.body["action"], where)}
