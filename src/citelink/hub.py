"""The relay's switchboard: which sockets of this process belong to which user,
and what each of them has been told.

The listener (citelink/listener.py) hands every event of the `citelink_events`
channel to `Hub.publish`. Events of users with no socket here are dropped on
the spot, without a query. The others are rendered by one dispatcher task, in
batches (everything that arrived together): the content of `new` items is read
with one query per batch and kept in a small LRU, so a notification is read
once however many recipients are connected. Each socket then gets its frames
through its own bounded queue (`Client`); one that falls behind is closed with
4408 and nobody else waits for it.

No gaps, no duplicates. Inbox ids are handed out in commit order
(sql/triggers.sql), so every socket only needs the highest item id it was
sent (`Client.last_id`): an item is pushed once, when its id is above it, and
"every item above it" read from the database is exactly what a socket missed.
Whenever a socket's view is rebuilt from the database (opening, `resume`,
listing, back-fill after the listener reconnects), live events for it are held
from before the query until its answer is queued, then released through the
same dedupe: what the snapshot already showed is not sent twice, what
committed after it is not lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg

from . import inbox
from .queries import Q
from .responses import dumps
from .settings import Settings

log = logging.getLogger("citelink.hub")

# What may fail when the database is unreachable or restarting.
DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A pooled connection killed while idle (see citelink.database.UNAVAILABLE).
    asyncpg.InternalClientError,
)
QUERY_TIMEOUT = 10.0
# Rows per query when replaying or back-filling a long run of items.
BATCH_ROWS = 500
# Items whose state a socket remembers (for back-fill after a reconnect).
SHOWN_LIMIT = 10_000
# Notifications whose rendered content is kept (a fan-out spans several batches).
CONTENT_CACHE = 256
# Seconds a shutdown waits for sockets to send their close frames.
SHUTDOWN_WAIT = 3.0

KINDS = frozenset({"new", "read", "unread", "delete", "restore", "revoke"})
# Why the sockets of a user deactivated or deleted are closed.
REVOKED = "user is inactive or deleted"
# Why the sockets of a user are closed when their tokens were revoked.
TOKENS_REVOKED = "token has been revoked"


class Event(NamedTuple):
    """One `citelink_events` payload: "<kind> <user_id> <item_id> <notification_id> <unread>"."""

    kind: str
    user_id: int
    item_id: int
    notification_id: int
    unread: int


def parse_event(payload: str) -> Event | None:
    """The event in `payload`, or None when it is not one of ours."""
    parts = payload.split(" ")
    if len(parts) != 5 or parts[0] not in KINDS:
        return None
    try:
        user_id, item_id, notification_id, unread = (int(p) for p in parts[1:])
    except ValueError:
        return None
    return Event(parts[0], user_id, item_id, notification_id, unread)


def item_frame(item: dict) -> str:
    """The `notification` frame of an inbox item (the shape of citelink.inbox)."""
    return dumps({"type": "notification", **item}).decode()


def counts_frame(unread: int) -> str:
    return f'{{"type":"counts","unread":{unread}}}'


def _state_frame(kind: str, item_id: int) -> str:
    return f'{{"type":"{kind}","id":{item_id}}}'


async def _no_barrier(pool: asyncpg.Pool) -> bool:
    return False


class Refused(Exception):
    """A socket may not be attached; close it with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(slots=True)
class Delivery:
    """One event rendered for the sockets of its user."""

    seq: int
    kind: str
    item_id: int
    unread: int
    frame: str
    is_read: bool = False


# (is_read, is_deleted) of an item, as a socket last told its client.
ItemState = tuple[bool, bool]


def _state_after(kind: str, known: ItemState | None) -> ItemState:
    is_read, is_deleted = known or (False, False)
    if kind == "read":
        return True, is_deleted
    if kind == "unread":
        return False, is_deleted
    return is_read, True


class Outbox:
    """A socket's bounded FIFO of deliveries, with asyncio.Queue's put, get,
    task_done and join. It keeps one deque and the futures of whoever waits
    where asyncio.Queue keeps four deques and an Event: about 6 KiB less per
    socket, which counts at 10,000 sockets per process (BENCHMARKS.md)."""

    __slots__ = ("_items", "_unfinished", "_waiters", "maxsize")

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._items: deque[list[str]] = deque()
        self._unfinished = 0
        self._waiters: list[asyncio.Future[None]] | None = None

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: list[str]) -> None:
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)
        self._unfinished += 1
        self._wake()

    async def put(self, item: list[str]) -> None:
        while self.full():
            await self._wait()
        self.put_nowait(item)

    async def get(self) -> list[str]:
        while not self._items:
            await self._wait()
        return self.get_nowait()

    def get_nowait(self) -> list[str]:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        self._wake()
        return item

    def task_done(self) -> None:
        self._unfinished -= 1
        if not self._unfinished:
            self._wake()

    async def join(self) -> None:
        """Until every item put has been taken and marked done."""
        while self._unfinished:
            await self._wait()

    async def _wait(self) -> None:
        # Each waiter has a future of its own (cancelling one waiter cancels no
        # other); any change wakes them all, and each checks its condition again.
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters and waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)


class Client:
    """One socket as the hub sees it: what its client was told, and its queue.

    The queue holds deliveries (the frames of one event batch, one reply, one
    slice of a replay), at most `queue_size`: a burst from one commit, such as
    read-all over 10,000 items, is one delivery and not a reason to close a
    socket; a client that stops reading falls one delivery behind per commit.
    """

    def __init__(self, user_id: int, queue_size: int, generation: int = 0):
        self.user_id = user_id
        # The token generation of the socket's token (users.token_generation).
        self.generation = generation
        self.queue = Outbox(queue_size)
        self.last_id = 0
        # The newest item when the socket opened: items above it, up to
        # `last_id`, were pushed to it already and a resume must not repeat them.
        self.opened_at = 0
        # The unread count last sent; None until one was.
        self.unread: int | None = None
        # Events the hub received up to this number were committed before this
        # socket's last database snapshot, which already reflects them.
        self.after_seq = 0
        self.shown: OrderedDict[int, ItemState] = OrderedDict()
        # Held by whatever rebuilds this socket's view from the database.
        self.lock = asyncio.Lock()
        # The hub generation this socket was last back-filled for.
        self.synced = -1
        self._held: list[list[Delivery]] = []
        self._closed: asyncio.Future[tuple[int | None, str]] = (
            asyncio.get_running_loop().create_future()
        )

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def close(self, code: int | None, reason: str = "") -> None:
        """Ask the socket's session to close with `code` (None: the peer is gone)."""
        if not self._closed.done():
            self._closed.set_result((code, reason))

    async def wait_closed(self) -> tuple[int | None, str]:
        """The close code and reason, once `close` is called. Only the socket's
        own session waits here, so there is no shield (a future and two
        callbacks more per socket): cancelling the wait marks the client closed."""
        return await self._closed

    def send(self, frames: list[str]) -> None:
        """Queue frames without waiting; a full queue closes the socket (4408)."""
        if not frames or self.closed:
            return
        try:
            self.queue.put_nowait(frames)
        except asyncio.QueueFull:
            self._too_slow()

    def _too_slow(self) -> None:
        log.info("closing a socket of user %s: send queue full", self.user_id)
        self.close(4408, "too slow: send queue full")

    async def reply(self, frames: list[str]) -> None:
        """Queue an answer to the client's own request, waiting for room."""
        if not self.closed:
            await self.queue.put(frames)

    def remember(self, item_id: int, state: ItemState) -> None:
        self.shown[item_id] = state
        self.shown.move_to_end(item_id)
        if len(self.shown) > SHOWN_LIMIT:
            self.shown.popitem(last=False)

    def remember_items(self, items: Iterable[dict]) -> None:
        for item in items:
            self.remember(item["id"], (item["is_read"], False))

    def offer(self, deliveries: list[Delivery], hold: bool) -> None:
        if not hold:
            self.apply(deliveries)
        elif len(self._held) >= self.queue.maxsize:
            self._too_slow()
        else:
            self._held.append(deliveries)

    def release(self) -> None:
        """Send what was held while the view was rebuilt, minus what it showed."""
        held, self._held = self._held, []
        if held:
            self.apply([d for deliveries in held for d in deliveries])

    def apply(self, deliveries: list[Delivery]) -> None:
        frames: list[str] = []
        unread = None
        for d in deliveries:
            if d.seq <= self.after_seq:
                continue
            unread = d.unread
            if d.kind == "new":
                if d.item_id <= self.last_id:
                    continue  # already sent by a snapshot
                self.last_id = d.item_id
                self.remember(d.item_id, (False, False))
            elif d.kind == "restore":
                self.remember(d.item_id, (d.is_read, False))
            else:
                known = self.shown.get(d.item_id)
                target = _state_after(d.kind, known)
                if known == target:
                    continue  # the client already shows this state
                self.remember(d.item_id, target)
            frames.append(d.frame)
        if unread is not None and unread != self.unread:
            self.unread = unread
            frames.append(counts_frame(unread))
        self.send(frames)

    def backfill(
        self,
        items: list[dict],
        states: dict[int, ItemState],
        restored: dict[int, dict],
        unread: int,
    ) -> None:
        """Catch up from the database after events were lost: state changes of
        items shown before, items above `last_id`, and the unread count."""
        frames: list[str] = []
        for item_id, known in list(self.shown.items()):
            current = states.get(item_id, (known[0], True))
            if current == known:
                continue
            self.remember(item_id, current)
            if current[1]:
                if not known[1]:
                    frames.append(_state_frame("delete", item_id))
            elif known[1]:
                if restored.get(item_id):
                    frames.append(item_frame(restored[item_id]))
            else:
                frames.append(_state_frame("read" if current[0] else "unread", item_id))
        for item in items:
            if item["id"] > self.last_id:
                self.last_id = item["id"]
                self.remember(item["id"], (item["is_read"], False))
                frames.append(item_frame(item))
        if unread != self.unread:
            self.unread = unread
            frames.append(counts_frame(unread))
        self.send(frames)


class Hub:
    """user_id → this process's sockets, and the dispatcher that feeds them."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings):
        self._pool = pool
        self._settings = settings
        self._clients: dict[int, list[Client]] = {}
        self._pending: list[tuple[int, Event]] = []
        # Events received so far: their order is commit order.
        self._received = 0
        self._wakeup = asyncio.Event()
        self._content: OrderedDict[int, str] = OrderedDict()
        # Bumped whenever the listener loses its connection: a socket whose
        # `synced` differs may have missed events and holds them until back-filled.
        self._generation = 0
        self._live = False
        self._closing = False
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task | None = None
        # Called when a batch cannot be rendered: the listener reconnects and
        # back-fills, which recovers whatever the batch held.
        self.on_failure: Callable[[], None] = lambda: None
        # Waits until every event committed before the call has been received
        # (the listener's NOTIFY round trip); False when it cannot tell.
        self.barrier: Callable[[asyncpg.Pool], Awaitable[bool]] = _no_barrier

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="citelink-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # Sockets ------------------------------------------------------------------

    async def attach(self, client: Client) -> None:
        """Register a new socket; Refused when it may not stay open."""
        if self._closing:
            raise Refused(1001, "server shutting down")
        sockets = self._clients.setdefault(client.user_id, [])
        if len(sockets) >= self._settings.ws_max_sockets_per_user:
            raise Refused(4429, "too many sockets for this user")
        async with client.lock:
            sockets.append(client)
            self._empty.clear()
            # Events committed before the socket opened are reflected in its
            # watermark: once the barrier is passed, they have all been received
            # and are dropped for this socket (after_seq).
            if self._live:
                await self.barrier(self._pool)
            # While the listener is down, the next back-fill covers this socket.
            client.synced = self._generation if self._live else self._generation - 1
            client.after_seq = self._received
            try:
                row = await self._pool.fetchrow(
                    Q.relay_socket_start, client.user_id, timeout=QUERY_TIMEOUT
                )
            except DATABASE_ERRORS:
                self.detach(client)
                raise Refused(1013, "database unavailable, try again later") from None
            if row is None or not row["is_active"]:
                self.detach(client)
                raise Refused(4401, REVOKED)
            if row["token_generation"] != client.generation:
                self.detach(client)
                raise Refused(4401, TOKENS_REVOKED)
            client.last_id = client.opened_at = row["last_id"]
            if client.synced == self._generation:
                client.release()

    def detach(self, client: Client) -> None:
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
    async def snapshot(self, client: Client) -> AsyncIterator[None]:
        """Rebuild part of a socket's view from the database inside this block:
        live events for it are held until the block's frames are queued."""
        async with client.lock:
            try:
                yield
            finally:
                if client.synced == self._generation:
                    client.release()

    async def resume(self, client: Client, after: int) -> None:
        """Replay every non-deleted item above `after`, in id order, then a
        `resumed` frame; live pushes continue after it without a gap.

        Why "id > after" is a gapless cursor: an id is taken when a row is
        inserted, not when it commits, so with free-running ids a transaction
        holding id 7 could commit after one holding id 8 had been seen, and a
        client resuming after 8 would never get 7. Inbox inserts therefore take
        a transaction-scoped lock (sql/triggers.sql): a publisher gets inbox ids
        only once every earlier publisher has committed or aborted, so id order
        is commit order, and every item a client has not seen has a higher id
        than every item it has.
        """
        count, cursor = 0, after
        async with self.snapshot(client):
            while True:
                rows = await inbox.after(self._pool, client.user_id, cursor, BATCH_ROWS)
                # A client resuming right after connecting may have been pushed
                # items already: those are not sent twice.
                missed = [r for r in rows if not client.opened_at < r["id"] <= client.last_id]
                if rows:
                    client.remember_items(missed)
                    cursor = rows[-1]["id"]
                    count += len(missed)
                    if missed:
                        await client.reply([item_frame(r) for r in missed])
                    # At the client's pace: a slow reader of a long history
                    # holds one batch in memory, not all of it.
                    await client.queue.join()
                if len(rows) < BATCH_ROWS:
                    break
            if count:
                client.last_id = max(client.last_id, cursor)
            await client.reply(
                [dumps({"type": "resumed", "count": count, "last_id": cursor}).decode()]
            )

    # Events -------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Take one event from the listener (called synchronously, in order)."""
        self._received += 1
        if event.kind == "revoke":
            # "revoke <user> <generation> <why> 0"; why 0: the user is
            # inactive or gone (sql/triggers.sql).
            self._revoke(event.user_id, event.item_id if event.notification_id else None)
        elif event.user_id in self._clients:
            self._pending.append((self._received, event))
            self._wakeup.set()

    def _revoke(self, user_id: int, generation: int | None = None) -> None:
        """Close the user's sockets: all of them, or those whose token is of
        a generation older than `generation`."""
        for client in self._clients.get(user_id, ()):
            if generation is None:
                client.close(4401, REVOKED)
            elif client.generation < generation:
                client.close(4401, TOKENS_REVOKED)

    def lost(self) -> None:
        """The listener lost its connection: events from now on may be missing."""
        self._live = False
        self._generation += 1

    async def resync(self) -> None:
        """The listener is LISTENing again: back-fill every socket that may have
        missed events, then let their held live events through."""
        self._live = True
        generation = self._generation
        stale: dict[int, list[Client]] = {}
        for sockets in self._clients.values():
            for client in sockets:
                if client.synced != generation:
                    stale.setdefault(client.user_id, []).append(client)
        if not stale:
            return
        log.info("back-filling %d user(s) after reconnecting", len(stale))
        # Let events committed before now arrive: each back-fill snapshot then
        # reflects every event received before it (after_seq).
        await self.barrier(self._pool)
        room = asyncio.Semaphore(self._settings.pool_size)

        async def backfill(user_id: int, clients: list[Client]) -> None:
            async with room:
                await self._backfill(user_id, clients, generation)

        async with asyncio.TaskGroup() as group:
            for user_id, clients in stale.items():
                group.create_task(backfill(user_id, clients))

    async def _backfill(self, user_id: int, clients: list[Client], generation: int) -> None:
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
                items = await self._items_after(conn, user_id, min(c.last_id for c in clients))
                rows = await conn.fetch(Q.relay_item_states, user_id, shown) if shown else []
                states = {r["id"]: (r["is_read"], r["is_deleted"]) for r in rows}
                restored = {}
                for item_id in {i for c in clients for i, s in c.shown.items() if s[1]}:
                    if item_id in states and not states[item_id][1]:
                        restored[item_id] = await inbox.get(conn, user_id, item_id)
                unread = (await inbox.counts(conn, user_id))["unread"]
                # A `revoke` event may have been lost too.
                user = await conn.fetchrow(Q.user_by_id, user_id)
            if user is None or not user["is_active"]:
                self._revoke(user_id)
                return
            self._revoke(user_id, user["token_generation"])
            for client in clients:
                client.backfill(items, states, restored, unread)
                if self._generation == generation:
                    client.synced = generation
                    client.release()

    @staticmethod
    async def _items_after(conn: asyncpg.Connection, user_id: int, after: int) -> list[dict]:
        items: list[dict] = []
        while True:
            rows = await inbox.after(conn, user_id, after, BATCH_ROWS)
            items.extend(rows)
            if len(rows) < BATCH_ROWS:
                return items
            after = rows[-1]["id"]

    async def _dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            try:
                await self._deliver(batch)
            except DATABASE_ERRORS as exc:
                log.warning("could not render %d event(s): %r; resyncing", len(batch), exc)
                self.on_failure()
            except Exception:
                # A dead dispatcher would silence every socket: log, resync, go on.
                log.exception("could not deliver %d event(s); resyncing", len(batch))
                self.on_failure()

    async def _deliver(self, received: list[tuple[int, Event]]) -> None:
        batch = [(seq, e) for seq, e in received if e.user_id in self._clients]
        content: dict[int, str] = {}
        for notification_id in {e.notification_id for _, e in batch if e.kind == "new"}:
            if notification_id in self._content:
                self._content.move_to_end(notification_id)
                content[notification_id] = self._content[notification_id]
            else:
                content[notification_id] = ""
        missing = [n for n, tail in content.items() if not tail]
        if missing:
            content.update(await self._load_content(missing))
        restored = {
            e.item_id: await inbox.get(self._pool, e.user_id, e.item_id)
            for _, e in batch
            if e.kind == "restore"
        }
        per_user: dict[int, list[Delivery]] = {}
        for seq, e in batch:
            is_read = False
            if e.kind == "new":
                tail = content[e.notification_id]
                if not tail:
                    continue  # the notification was deleted before we read it
                frame = f'{{"type":"notification","id":{e.item_id},{tail}'
            elif e.kind == "restore":
                item = restored.get(e.item_id)
                if item is None:
                    continue
                frame, is_read = item_frame(item), item["is_read"]
            else:
                frame = _state_frame(e.kind, e.item_id)
            per_user.setdefault(e.user_id, []).append(
                Delivery(seq, e.kind, e.item_id, e.unread, frame, is_read)
            )
        for user_id, deliveries in per_user.items():
            for client in self._clients.get(user_id, ()):
                hold = client.lock.locked() or client.synced != self._generation
                client.offer(deliveries, hold)

    async def _load_content(self, notification_ids: list[int]) -> dict[int, str]:
        rows = await self._pool.fetch(
            Q.relay_notifications, notification_ids, timeout=QUERY_TIMEOUT
        )
        loaded = {}
        for row in rows:
            body = dict(row) | {"is_read": False, "read_at": None}
            # Rendered once, without the opening brace: each recipient's frame
            # is its own `{"type":...,"id":N,` followed by this.
            loaded[row["notification_id"]] = self._content[row["notification_id"]] = dumps(
                body
            ).decode()[1:]
        while len(self._content) > CONTENT_CACHE:
            self._content.popitem(last=False)
        return loaded
