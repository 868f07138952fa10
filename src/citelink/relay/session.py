"""One open socket's session: its reader and writer tasks, and every client
frame of both protocols (the frames and close codes are in citelink.relay.websocket'
docstring and docs/websocket.md). Bad frames get an `error` frame; the socket stays
open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from citelink import metrics
from citelink.api.inbox import FILTER, filter_of
from citelink.db import inbox_store
from citelink.db.budget import Busy, WorkBudget
from citelink.db.connection import BIGINT_MAX, ERRORS, statement_seconds
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.identity import api_keys
from citelink.identity.callers import REVOKED, identity
from citelink.identity.platform_tokens import TOO_LONG
from citelink.relay import frames
from citelink.relay.events import Counts
from citelink.relay.hub import Hub
from citelink.relay.peers import Peer
from citelink.relay.protocol import TOKEN_REFUSED
from citelink.settings import Settings

log = logging.getLogger("citelink.relay.websocket")

INVALID = "the token is invalid or expired"
KEY_REFUSED = "API keys are not accepted on sockets: use a user's access token"

# How long a close may wait for a client that does not read.
CLOSE_TIMEOUT = 10.0
# Page size of the seed's numbered pages when the client does not say.
SEED_PAGE_SIZE = 10
# How deep numbered pages go: page p of size s starts (p - 1) * s items in,
# and skipping items costs as much as reading them.
SEED_PAGES_DEPTH = 10_000


# A client's frame: a decoded JSON object, checked field by field as it is read.
Frame = dict[str, Any]


class FrameError(Exception):
    """A client frame that is answered with an error frame."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def _integer(frame: Frame, field: str, *, default: int | None = None, low: int = 1) -> int:
    value = frame.get(field, default)
    # bool is an int in Python, not in JSON.
    if type(value) is not int or not low <= value <= BIGINT_MAX:
        raise FrameError("invalid", f"'{field}' must be an integer >= {low}")
    return value


def _optional_integer(frame: Frame, field: str) -> int | None:
    return None if frame.get(field) is None else _integer(frame, field)


class Session:
    """One open socket of an authenticated user."""

    def __init__(
        self, websocket: WebSocket, client: Peer, expires: float, hub: Hub, settings: Settings
    ):
        self.websocket = websocket
        self.client = client
        self.handlers = HANDLERS if client.extended else SEED_HANDLERS
        self.hub = hub
        self.settings = settings
        self.pool: asyncpg.Pool = websocket.state.pool
        # A timer, not a task: one socket costs less memory (see BENCHMARKS.md).
        self.expiry: asyncio.TimerHandle | None = None
        self.expire_at(expires)
        self.budget = hub.frame_budget(client.user_id)
        self.work: WorkBudget = websocket.state.work
        self.limited = False  # within a run of dropped frames

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._send()),
        ]
        for task in tasks:
            task.add_done_callback(self._task_done)
        try:
            code, reason = await self.client.wait_closed()
        finally:
            if self.expiry:
                self.expiry.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        metrics.socket_closed(code)
        if code is not None:
            # A client that does not read would block the close frame forever.
            with contextlib.suppress(TimeoutError, OSError, WebSocketDisconnect, RuntimeError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.websocket.close(code, reason)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("socket task failed", exc_info=task.exception())
            self.client.close(1011, "internal error")
        else:
            self.client.close(None)  # the peer went away

    async def _send(self) -> None:
        while True:
            frames = await self.client.queue.get()
            try:
                for frame in frames:
                    await self.websocket.send_text(frame)
            except (OSError, WebSocketDisconnect):
                return
            metrics.frames_sent(len(frames))
            self.client.queue.task_done()

    def expire_at(self, exp: float) -> None:
        """Close the socket with 4401 at `exp` (epoch seconds) unless renewed first."""
        if self.expiry:
            self.expiry.cancel()
        loop = asyncio.get_running_loop()
        self.expiry = loop.call_at(
            loop.time() + max(0.0, exp - time.time()), self.client.close, 4401, "token expired"
        )

    async def _receive(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if not self.budget.allow():
                if not self.limited:
                    self.limited = True
                    self.client.send(
                        [frames.error("rate_limited", "too many frames; this one was dropped")]
                    )
                continue
            self.limited = False
            try:
                await self._handle(message)
            except FrameError as exc:
                self.client.send([frames.error(exc.code, exc.detail)])
            except ERRORS as exc:
                log.warning("socket frame failed on the database: %r", exc)
                answer = frames.error("unavailable", "database unavailable, retry")
                self.client.send([answer])

    async def _handle(self, message: Message) -> None:
        text = message.get("text")
        if text is None:
            raise FrameError("unsupported", "binary frames are not supported; send JSON text")
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise FrameError("invalid_json", "the frame is not valid JSON") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise FrameError("invalid", "expected a JSON object with a string 'type'")
        handler = self.handlers.get(frame["type"])
        if handler is None:
            raise FrameError("unknown_type", f"unknown frame type {frame['type'][:50]!r}")
        self.client.heard(frame["type"] in ITEM_ACTIONS)
        if handler is Session.ping:
            await handler(self, frame)
            return
        # The user's budget of database work (citelink.db.budget), shared with
        # their REST requests, and the statement timeout of the frame's class.
        bulk = frame["type"] in BULK_FRAMES
        seconds = self.settings.bulk_query_seconds if bulk else self.settings.user_query_seconds
        try:
            async with self.work.claim(self.client.user_id):
                token = statement_seconds.set(seconds)
                try:
                    await handler(self, frame)
                finally:
                    statement_seconds.reset(token)
        except Busy:
            raise FrameError(
                "rate_limited", "too much of your database work at once; try again"
            ) from None

    # Peer frames ------------------------------------------------------------

    async def notifications_list(self, frame: Frame) -> None:
        """Cursor form {before, limit, and the filters of citelink.api.inbox}
        (extended protocol), or the seed's numbered pages {page, page_size}."""
        largest = self.settings.max_page_size
        if self.client.extended and ("before" in frame or "limit" in frame):
            before = _optional_integer(frame, "before")
            limit = _integer(frame, "limit", default=SEED_PAGE_SIZE)
            if limit > largest:
                raise FrameError("invalid", f"at most {largest} items per page")
            where = self._filter(frame, ("type", "before", "limit"))
            await self.hub.list_page(self.client, before, limit, where)
            return
        page = _integer(frame, "page", default=1)
        # The seed's client always asks for 100: it gets the largest page there is.
        limit = min(_integer(frame, "page_size", default=SEED_PAGE_SIZE), largest)
        # OFFSET walks every item it skips: deep pages are bounded.
        if (page - 1) * limit >= SEED_PAGES_DEPTH:
            raise FrameError(
                "page_too_deep",
                f"numbered pages go {SEED_PAGES_DEPTH:,} items deep; older items are listed "
                "with the cursor form {before, limit} (the citelink.v1 protocol)",
            )
        await self.hub.list_numbered(self.client, page, limit)

    def _filter(self, frame: Frame, besides: tuple[str, ...]) -> inbox_store.Filter:
        """The inbox filter in a frame's other fields (status, tag, data, since,
        until), checked as REST checks a bulk action's."""
        fields = {k: v for k, v in frame.items() if k not in besides}
        try:
            return filter_of(FILTER.check(fields, self.settings))
        except ApiError as exc:
            problems = "; ".join(f"'{k}' {v}" for k, v in (exc.errors or {}).items())
            raise FrameError("invalid", problems) from None

    async def _set(self, frame: Frame, **state: bool) -> None:
        # Success is announced by the database's event, to every socket alike.
        if not await inbox_store.set_state(
            self.pool, self.client.user_id, _integer(frame, "id"), **state
        ):
            raise FrameError("not_found", "no such notification")

    async def read(self, frame: Frame) -> None:
        await self._set(frame, is_read=True)

    async def unread(self, frame: Frame) -> None:
        await self._set(frame, is_read=False)

    async def seen(self, frame: Frame) -> None:
        await self._set(frame, is_seen=True)

    async def archive(self, frame: Frame) -> None:
        await self._set(frame, is_archived=True)

    async def unarchive(self, frame: Frame) -> None:
        await self._set(frame, is_archived=False)

    async def delete(self, frame: Frame) -> None:
        if not await inbox_store.delete(self.pool, self.client.user_id, _integer(frame, "id")):
            raise FrameError("not_found", "no such notification")

    async def interact(self, frame: Frame) -> None:
        item_id, action = _integer(frame, "id"), frame.get("action")
        if action is not None and not isinstance(action, str):
            raise FrameError("invalid", "'action' must be a string")
        item = await inbox_store.get(self.pool, self.client.user_id, item_id)
        if item is None:
            raise FrameError("not_found", "no such notification")
        if action is not None and action not in inbox_store.action_ids(item):
            raise FrameError("invalid", "no such action on this notification")
        await inbox_store.interact(self.pool, self.client.user_id, item_id, action)

    async def read_all(self, frame: Frame) -> None:
        where = self._filter(frame, ("type",))
        updated = await inbox_store.bulk(self.pool, self.client.user_id, "read", where)
        self.client.send([frames.frame("read_all", updated=updated)])

    async def seen_all(self, frame: Frame) -> None:
        where = self._filter(frame, ("type",))
        updated = await inbox_store.bulk(self.pool, self.client.user_id, "seen", where)
        self.client.send([frames.frame("seen_all", updated=updated)])

    async def bulk(self, frame: Frame) -> None:
        action = frame.get("action")
        if action not in inbox_store.ACTIONS:
            raise FrameError(
                "invalid", f"'action' must be one of: {', '.join(inbox_store.ACTIONS)}"
            )
        given = frame.get("filter", {})
        if not isinstance(given, dict):
            raise FrameError("invalid", "'filter' must be a JSON object")
        where = self._filter(given, ())
        updated = await inbox_store.bulk(self.pool, self.client.user_id, action, where)
        self.client.send([frames.frame("bulk", action=action, updated=updated)])

    async def resume(self, frame: Frame) -> None:
        await self.hub.resume(self.client, _integer(frame, "after", low=0))

    async def counts(self, frame: Frame) -> None:
        counts = Counts(**await inbox_store.counts(self.pool, self.client.user_id))
        self.client.counts = counts
        self.client.send([frames.counts(counts)])

    async def ping(self, frame: Frame) -> None:
        self.client.send(['{"type":"pong"}'])

    async def auth(self, frame: Frame) -> None:
        """A fresh access token of the same user pushes the socket's expiry back."""
        token = frame.get("token")
        if not isinstance(token, str):
            raise FrameError("invalid", "'token' must be a string")
        if api_keys.looks_like_key(token):
            raise FrameError("invalid_token", KEY_REFUSED)
        try:
            _, found = await identity(
                self.pool, self.settings, self.websocket.state.platform, token
            )
        except ApiError as exc:
            if exc.detail == REVOKED:
                # Whoever the token named, it is no live user.
                row = await self.pool.fetchrow(Q.user_by_id, self.client.user_id)
                if row is None or not row["is_active"]:
                    self.client.close(TOKEN_REFUSED, REVOKED)
                    return
            if exc.detail == TOO_LONG:
                detail = TOO_LONG
            else:
                detail = "the token has been revoked" if "revoked" in exc.detail else INVALID
            raise FrameError("invalid_token", detail) from None
        if found.user_id != self.client.user_id:
            raise FrameError("invalid_token", "the token belongs to another user")
        self.expire_at(found.expires)
        self.client.send([frames.frame("auth", expires_at=found.expires)])


# Frames that change one item: a socket that only ever sent these is the
# first to go past the per-user cap (Peer.evictable).
ITEM_ACTIONS = frozenset(
    {"read", "deleted", "delete", "unread", "seen", "archive", "unarchive", "interact"}
)
# Frames that change every item a filter selects: the bulk statement timeout.
BULK_FRAMES = frozenset({"read_all", "seen_all", "bulk"})
# Peer frame type -> Session method: one table per protocol for every socket,
# where a dict of bound methods per session was memory 10,000 sockets paid for.
Handlers = dict[str, Callable[[Session, Frame], Awaitable[None]]]
# What the seed's server understood: nothing else answers but an error frame.
SEED_HANDLERS: Handlers = {
    "notifications_list": Session.notifications_list,
    "read": Session.read,
    "deleted": Session.delete,
    "delete": Session.delete,
}
HANDLERS: Handlers = {
    **SEED_HANDLERS,
    "unread": Session.unread,
    "seen": Session.seen,
    "archive": Session.archive,
    "unarchive": Session.unarchive,
    "interact": Session.interact,
    "read_all": Session.read_all,
    "seen_all": Session.seen_all,
    "bulk": Session.bulk,
    "resume": Session.resume,
    "counts": Session.counts,
    "ping": Session.ping,
    "auth": Session.auth,
}
