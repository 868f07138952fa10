"""The caller's own inbox over REST (citelink.inbox does the work, shared with
the WebSocket relay). Another user's item is a 404, exactly like a missing one."""

from __future__ import annotations

from .. import inbox
from ..errors import ApiError
from .endpoint import Call, endpoint
from .validation import PAGE, Body, Boolean, Choice, Integer, Query, page, page_bounds

TAG_FILTER = Integer(description="only items of this tag (id)")
PAGE_FILTERS = Query(
    {
        **PAGE,
        "before": Integer(
            description="only items older than this item, in my order (the `next` of a page)"
        ),
        "status": Choice(choices=("all", "unread", "read"), description="default all"),
        "tag": TAG_FILTER,
    }
)


def _not_found() -> ApiError:
    return ApiError(404, "no such inbox item")


@endpoint(
    "My inbox: non-deleted items, newest first",
    query=PAGE_FILTERS,
    response="Page[InboxItem]",
)
async def list_items(call: Call) -> dict:
    _, limit = page_bounds(call.query)
    rows = await inbox.page(
        call.pool,
        call.me.id,
        before=call.query.get("before"),
        limit=limit + 1,
        status=call.query.get("status", "all"),
        tag=call.query.get("tag"),
    )
    return page(rows, limit)


@endpoint("My unread and total (non-deleted) counts", response="InboxCounts")
async def counts(call: Call) -> dict:
    return await inbox.counts(call.pool, call.me.id)


@endpoint("One item of my inbox", response="InboxItem")
async def get_item(call: Call) -> dict:
    item = await inbox.get(call.pool, call.me.id, call.id)
    if item is None:
        raise _not_found()
    return item


@endpoint(
    "Mark one item read or unread",
    body=Body({"is_read": Boolean()}),
    response="InboxItem",
)
async def update_item(call: Call) -> dict:
    if not await inbox.set_read(call.pool, call.me.id, call.id, call.body["is_read"]):
        raise _not_found()
    item = await inbox.get(call.pool, call.me.id, call.id)
    if item is None:  # deleted in between
        raise _not_found()
    return item


@endpoint("Delete one item (soft: the row stays, marked deleted)", status=204)
async def delete_item(call: Call) -> None:
    if not await inbox.delete(call.pool, call.me.id, call.id):
        raise _not_found()


@endpoint(
    "Mark every unread item (of one tag, if given) read",
    query=Query({"tag": TAG_FILTER}),
    response="Updated",
)
async def read_all(call: Call) -> dict:
    updated = await inbox.read_all(call.pool, call.me.id, call.query.get("tag"))
    return {"updated": updated}
