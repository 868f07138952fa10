"""The relay's switchboard: which sockets of this process belong to which
user, how events reach them, and every path that rebuilds a socket's view
from the database.

Follow one event: the listener (citelink/relay/listener.py) hands every payload of
the events channel, parsed (citelink/relay/events.py), to `Hub.publish`. Events of
users with no socket here are dropped on the spot, without a query. The
others are rendered by one dispatcher task, in batches (everything that
arrived together), into deliveries (citelink/relay/rendering.py, a few queries per
batch whatever its size). Each socket then gets its deliveries through its own bounded
queue (citelink/relay/peers.py), which its session (citelink/relay/websocket.py) writes to
the socket; one that falls behind is closed with 4408 and nobody else waits.

Whenever a socket's view is rebuilt from the database (opening, `resume`,
listing, back-fill after the listener reconnects), live events for it are held
from before the query until its answer is queued (`snapshot`), then released
through the client's dedupe.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from citelink.db import inbox_store
from citelink.db.connection import ERRORS, Connection
from citelink.db.queries import Q
from citelink.identity.callers import REVOKED, TOKENS_REVOKED
from citelink.identity.throttle import FrameBudget
from citelink.relay import frames
from citelink.relay.events import Counts, Event
from citelink.relay.peers import Peer
from citelink.relay.protocol import REPLACED, TOKEN_REFUSED
from citelink.relay.rendering import QUERY_TIMEOUT, Renderer, current_items
from citelink.settings import Settings

if TYPE_CHECKING:
    from citelink.shapes import InboxItem

log = logging.getLogger("citelink.relay.hub")

# Rows per query when replaying or back-filling a long run of items.
BATCH_ROWS = 500
# Seconds a shutdown waits for sockets to send their close frames.
SHUTDOWN_WAIT = 3.0


class Refused(Exception):
    """A socket may not be attached; close it with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Hub:
    """user_id → this process's sockets, and the dispatcher that feeds them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        barrier: Callable[[asyncpg.Pool], Awaitable[bool]],
        on_failure: Callable[[], None],
    ):
        """`barrier(pool)` waits until every event committed before the call has
        been received (the listener's NOTIFY round trip; False when it cannot
        tell); `on_failure()` is called when a batch cannot be rendered (the
        listener then reconnects and back-fills, which recovers it)."""
        self._pool = pool
        self._settings = settings
        self._barrier = barrier
        self._on_failure = on_failure
        self._clients: dict[int, list[Peer]] = {}
        # Kept while one of the user's sockets holds it.
        self._budgets: weakref.WeakValueDictionary[int, FrameBudget] = weakref.WeakValueDictionary()
        self._pending: list[tuple[int, Event]] = []
        # Events received so far: their order is commit order.
        self._received = 0
        self._wakeup = asyncio.Event()
        self._renderer = Renderer(pool)
        # Bumped whenever the listener loses its connection: a socket whose
        # `synced` differs may have missed events and holds them until back-filled.
        self._epoch = 0
        self._live = False
        self._closing = False
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="citelink-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # Sockets ------------------------------------------------------------------

    async def attach(self, client: Peer) -> None:
        """Register a new socket; Refused when it may not stay open."""
        if self._closing:
            raise Refused(1001, "server shutting down")
        sockets = self._clients.setdefault(client.user_id, [])
        async with client.lock:
            sockets.append(client)
            self._empty.clear()
            # Events committed before the socket opened are reflected in its
            # watermark: once the barrier is passed, they have all been received
            # and are dropped for this socket (after_seq).
            if self._live:
                await self._barrier(self._pool)
            # While the listener is down, the next back-fill covers this socket.
            client.synced = self._epoch if self._live else self._epoch - 1
            client.after_seq = self._received
            try:
                row = await self._pool.fetchrow(
                    Q.relay_socket_start, client.user_id, timeout=QUERY_TIMEOUT
                )
            except ERRORS:
                self.detach(client)
                raise Refused(1013, "database unavailable, try again later") from None
            if row is None or not row["is_active"]:
                self.detach(client)
                raise Refused(TOKEN_REFUSED, REVOKED)
            if row["token_generation"] != client.generation:
                self.detach(client)
                raise Refused(TOKEN_REFUSED, TOKENS_REVOKED)
            client.last_position = client.opened_at = row["last_position"]
            if client.synced == self._epoch:
                client.release()
        # Over the cap a socket goes: the oldest of those only ever used to
        # act on items (a client may open a socket per click, never closing
        # one, while an older socket shows the list), else the oldest.
        while len(sockets) > self._settings.ws_max_sockets_per_user:
            victim = next((c for c in sockets if c.evictable), sockets[0])
            sockets.remove(victim)
            victim.close(REPLACED, "replaced by a newer socket of this user")

    def peers(self) -> list[Peer]:
        """Every socket attached here (read by citelink.metrics)."""
        return [client for sockets in self._clients.values() for client in sockets]

    def frame_budget(self, user_id: int) -> FrameBudget:
        """The frame budget shared by the user's sockets (one per process)."""
        budget = self._budgets.get(user_id)
        if budget is None:
            budget = self._budgets[user_id] = FrameBudget(self._settings.ws_frames_per_second)
        return budget

    def detach(self, client: Peer) -> None:
        sockets = self._clients.get(client.user_id, [])
        if client in sockets:
            sockets.remove(client)
        if not sockets:
            self._clients.pop(client.user_id, None)
        if not self._clients:
            self._empty.set()

    async def close_all(self, code: int, reason: str) -> None:
        """Close every socket (server shutdown) and wait a little for their sessions."""
        self._closing = True
        for sockets in list(self._clients.values()):
            for client in sockets:
                client.close(code, reason)
        try:
            async with asyncio.timeout(SHUTDOWN_WAIT):
                await self._empty.wait()
        except TimeoutError:
            log.warning("%d user(s) still had sockets open at shutdown", len(self._clients))

    @asynccontextmanager
    async def snapshot(self, client: Peer) -> AsyncIterator[None]:
        """Rebuild part of a socket's view from the database inside this block:
        live events for it are held until the block's frames are queued."""
        async with client.lock:
            try:
                yield
            finally:
                if client.synced == self._epoch:
                    client.release()

    async def resume(self, client: Peer, after: int) -> None:
        """Replay every non-deleted item after item `after` (an id, as clients
        know them; 0 for all), in the user's order, then a `resumed` frame;
        live pushes continue after it without a gap.

        Why this cursor is gapless: an id is taken when a row is inserted, not
        when it commits, so a client that saw id 8 may still be missing id 7,
        which committed later. Positions are numbered under the user's counter
        row lock (sql/triggers.sql, "Per-user order"): an item that commits
        later for this user always has a higher position, so "above the
        position of item `after`" is everything the client has not seen.
        """
        count, last_id = 0, after
        async with self.snapshot(client):
            cursor = await inbox_store.position_after(self._pool, client.user_id, after)
            while True:
                rows = await inbox_store.after(self._pool, client.user_id, cursor, BATCH_ROWS)
                # A client resuming right after connecting may have been pushed
                # items already: those are not sent twice.
                missed = [
                    r for r in rows if not client.opened_at < r["position"] <= client.last_position
                ]
                if rows:
                    client.remember_items(missed)
                    cursor, last_id = rows[-1]["position"], rows[-1]["id"]
                    count += len(missed)
                    if missed:
                        client.send([frames.item(r) for r in missed])
                    # At the client's pace: a slow reader of a long history
                    # holds one batch in memory, not all of it.
                    await client.queue.join()
                if len(rows) < BATCH_ROWS:
                    break
            client.last_position = max(client.last_position, cursor)
            client.send([frames.frame("resumed", count=count, last_id=last_id)])

    async def list_page(
        self, client: Peer, before: int | None, limit: int, where: inbox_store.Filter
    ) -> None:
        """Answer a cursor-form `notifications_list`: `limit` items `where`
        selects, before item `before` (None: the newest), newest first, and the
        `next` cursor."""
        async with self.snapshot(client):
            found = await inbox_store.listing(
                self._pool,
                client.user_id,
                before=before,
                limit=limit,
                where=where,
                window=self._settings.filter_window,
            )
            answer: dict[str, Any] = {"data": found.items, "next": found.next}
            if found.pinned is not None:
                answer["pinned"] = found.pinned
                client.remember_items(found.pinned)
            client.remember_items(found.items)
            client.send([frames.frame("notifications_list", **answer)])

    async def list_numbered(self, client: Peer, page: int, page_size: int) -> None:
        """Answer a seed-form `notifications_list`: numbered pages, newest first,
        and the total (both read in one snapshot). The connection goes back to
        the pool before the answer waits for room in the socket's queue."""
        async with self.snapshot(client):
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                items = await inbox_store.page_by_number(conn, client.user_id, page, page_size)
                total = (await inbox_store.counts(conn, client.user_id))["total"]
            client.remember_items(items)
            answer = {
                "data": items,
                "total_pages": math.ceil(total / page_size),
                "page": page,
                "total": total,
            }
            client.send([frames.frame("notifications_list", **answer)])

    # Events -------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Take one event from the listener (called synchronously, in order)."""
        self._received += 1
        if event.kind == "revoke":
            self._revoke(event.user_id, event.generation, event.active)
        elif event.user_id in self._clients or (event.kind == "fanout" and self._clients):
            self._pending.append((self._received, event))
            self._wakeup.set()

    def _revoke(self, user_id: int, generation: int | None = None, active: bool = False) -> None:
        """Close the user's sockets: all of them, or those whose token is of
        a generation older than `generation` (the user is still `active`: it
        is the tokens that were revoked)."""
        for client in self._clients.get(user_id, ()):
            if generation is None or client.generation < generation:
                client.close(TOKEN_REFUSED, TOKENS_REVOKED if active else REVOKED)

    def lost(self) -> None:
        """The listener lost its connection: events from now on may be missing."""
        self._live = False
        self._epoch += 1

    async def resync(self) -> None:
        """The listener is LISTENing again: back-fill every socket that may have
        missed events, then let their held live events through."""
        self._live = True
        epoch = self._epoch
        stale: dict[int, list[Peer]] = {}
        for sockets in self._clients.values():
            for client in sockets:
                if client.synced != epoch:
                    stale.setdefault(client.user_id, []).append(client)
        if not stale:
            return
        log.info("back-filling %d user(s) after reconnecting", len(stale))
        # Let events committed before now arrive: each back-fill snapshot then
        # reflects every event received before it (after_seq).
        await self._barrier(self._pool)
        room = asyncio.Semaphore(self._settings.pool_size)

        async def backfill(user_id: int, clients: list[Peer]) -> None:
            async with room:
                try:
                    await self._backfill(user_id, clients, epoch)
                except ERRORS:
                    raise  # the database again: the listener resyncs everyone
                except Exception:
                    self._fail(user_id, "could not back-fill the sockets")

        async with asyncio.TaskGroup() as group:
            for user_id, clients in stale.items():
                group.create_task(backfill(user_id, clients))

    async def _backfill(self, user_id: int, clients: list[Peer], epoch: int) -> None:
        async with AsyncExitStack() as locks:
            for client in clients:
                await locks.enter_async_context(client.lock)
            clients = [c for c in clients if not c.closed]
            if not clients:
                return
            for client in clients:
                client.after_seq = self._received
            shown = list({item_id for c in clients for item_id in c.shown})
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                items = await self._items_after(
                    conn, user_id, min(c.last_position for c in clients)
                )
                rows = await conn.fetch(Q.relay_item_states, user_id, shown) if shown else []
                states = {r["id"]: r["state"] for r in rows}
                wanted = [
                    item_id
                    for item_id, now in states.items()
                    if any(frames.needs_current(c.shown.get(item_id, now), now) for c in clients)
                ]
                current = await current_items(conn, wanted)
                counts = Counts(**await inbox_store.counts(conn, user_id))
                # A `revoke` event may have been lost too.
                user = await conn.fetchrow(Q.user_by_id, user_id)
            if user is None or not user["is_active"]:
                self._revoke(user_id)
                return
            self._revoke(user_id, user["token_generation"], active=True)
            for client in clients:
                client.backfill(items, states, current, counts)
                if self._epoch == epoch:
                    client.synced = epoch
                    client.release()

    @staticmethod
    async def _items_after(conn: Connection, user_id: int, position: int) -> list[InboxItem]:
        items: list[InboxItem] = []
        while True:
            rows = await inbox_store.after(conn, user_id, position, BATCH_ROWS)
            items.extend(rows)
            if len(rows) < BATCH_ROWS:
                return items
            position = rows[-1]["position"]

    async def _dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            try:
                await self._deliver(batch)
            except ERRORS as exc:
                log.warning("could not render %d event(s): %r; resyncing", len(batch), exc)
                self._on_failure()
            except Exception:
                # A dead dispatcher would silence every socket: log, resync, go on.
                log.exception("could not deliver %d event(s); resyncing", len(batch))
                self._on_failure()

    async def _deliver(self, received: list[tuple[int, Event]]) -> None:
        per_user = await self._renderer.render(received, self._clients, self._fail)
        for user_id, deliveries in per_user.items():
            for client in self._clients.get(user_id, ()):
                hold = client.lock.locked() or client.synced != self._epoch
                try:
                    client.offer(deliveries, hold)
                except Exception:
                    self._fail(user_id, "could not deliver events")

    def _fail(self, user_id: int, what: str) -> None:
        """A bug met with one user's events: close that user's sockets (their
        clients reconnect and resume) rather than stop the relay for everyone."""
        log.exception("%s of user %s; closing their sockets", what, user_id)
        for client in self._clients.get(user_id, ()):
            client.close(1011, "internal error")
