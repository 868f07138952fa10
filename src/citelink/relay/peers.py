"""One socket as the relay sees it: what its client has been told, and the
bounded queue of what it is still to be sent. Free of the database (the hub
feeds it deliveries and database snapshots), so its bookkeeping is tested
directly (tests/test_ws_hub.py).

No gaps, no duplicates: each user's items have positions in commit order
(sql/triggers.sql, "Per-user order"), so a socket only needs the highest
position it was sent (`Peer.last_position`): an item is pushed once, when
its position is above it, and "every item above it" read from the database is
exactly what a socket missed. While the hub rebuilds a socket's view from the
database, live deliveries are held (`offer`), then released through the same
dedupe (`release`): what the snapshot showed is not sent twice, what
committed after it is not lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from citelink.relay import frames
from citelink.relay.events import DELETED, QUIET, Counts, state_of
from citelink.relay.protocol import TOO_SLOW
from citelink.settings import Settings
from citelink.shapes import InboxItem

log = logging.getLogger("citelink.relay.peers")

# Items whose state a socket remembers (for back-fill after a reconnect).
SHOWN_LIMIT = 10_000


@dataclass(slots=True)
class Delivery:
    """One event, made ready for the sockets of its user: `kind` is new,
    change, remove or bulk (citelink.relay.events); `frame` the push of a new item;
    `current` the item as it is now, when telling the change needs it.
    `update`: a grouped notification moved the item to the top."""

    seq: int
    kind: str
    item_id: int
    position: int
    old: int
    new: int
    counts: Counts
    frame: str = ""
    current: InboxItem | None = None
    items: int = 0


class SendQueue:
    """A socket's bounded FIFO of deliveries, with asyncio.Queue's get,
    task_done and join. It holds at most `maxsize` deliveries and `max_bytes`
    of frames (counted as characters of their JSON), except that one delivery
    of any size goes into an empty queue: a big page is sent, but nothing piles
    up behind it. asyncio.Queue bounds the count only (the byte bound is why
    this class stays); it also keeps four deques and an Event where this
    keeps one deque and the futures of whoever waits (1.4 KiB less per
    socket at 10,000 sockets, BENCHMARKS.md)."""

    __slots__ = ("_bytes", "_items", "_unfinished", "_waiters", "max_bytes", "maxsize")

    def __init__(self, maxsize: int, max_bytes: int):
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._items: deque[tuple[list[str], int]] = deque()
        self._bytes = 0
        self._unfinished = 0
        self._waiters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def queued_bytes(self) -> int:
        return self._bytes

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: list[str]) -> None:
        size = sum(map(len, item))
        if self._items and (
            len(self._items) >= self.maxsize or self._bytes + size > self.max_bytes
        ):
            raise asyncio.QueueFull
        self._items.append((item, size))
        self._bytes += size
        self._unfinished += 1
        self._wake()

    async def get(self) -> list[str]:
        while not self._items:
            await self._wait()
        return self.get_nowait()

    def get_nowait(self) -> list[str]:
        if not self._items:
            raise asyncio.QueueEmpty
        item, size = self._items.popleft()
        self._bytes -= size
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


class Peer:
    """One socket as the hub sees it: what its client was told, and its queue.

    The queue holds deliveries (the frames of one event batch, one reply, one
    slice of a replay), at most `queue_size` and `queue_bytes` (SendQueue): a
    burst from one commit, such as read-all over 10,000 items, is one delivery
    and not a reason to close a socket; a client that stops reading falls one
    delivery behind per commit, and is closed (4408) once the queue is full.
    Nothing waits for room: neither events nor answers to the client's own
    requests, which hold no database connection while they are queued.
    """

    def __init__(
        self,
        user_id: int,
        queue_size: int,
        *,
        queue_bytes: int = Settings.ws_send_queue_bytes,
        generation: int = 0,
        extended: bool = True,
    ):
        self.user_id = user_id
        # The token generation of the socket's token (users.token_generation).
        self.generation = generation
        # The extended protocol (citelink.v1); the seed protocol is told no
        # counts and no unread changes (citelink.relay.websocket).
        self.extended = extended
        # What its client has sent: item actions only (read, delete, ...),
        # or something else too (a listing, resume, ping): see `evictable`.
        self.acted = False
        self.viewed = False
        self.queue = SendQueue(queue_size, queue_bytes)
        # The highest position (in the user's order) of an item sent to it.
        self.last_position = 0
        # The newest position when the socket opened: items above it, up to
        # `last_position`, were pushed already and a resume must not repeat them.
        self.opened_at = 0
        # The counts last sent; None until some were.
        self.counts: Counts | None = None
        # Events the hub received up to this number were committed before this
        # socket's last database snapshot, which already reflects them.
        self.after_seq = 0
        # The state (citelink.relay.events) of the items it was shown, as it was told.
        self.shown: OrderedDict[int, int] = OrderedDict()
        # Held by whatever rebuilds this socket's view from the database.
        self.lock = asyncio.Lock()
        # The hub epoch (listener connection) this socket was last back-filled for.
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

    def heard(self, action: bool) -> None:
        """The client sent a frame: an item action, or another one."""
        if action:
            self.acted = True
        else:
            self.viewed = True

    @property
    def evictable(self) -> bool:
        """Whether this socket was only ever used to act on items: a client
        that opens a socket per click (the seed's demo client) never reads
        those again, so they go before a socket someone is looking at."""
        return self.acted and not self.viewed

    def send(self, frames: list[str]) -> None:
        """Queue frames (events, or an answer) without waiting; a full queue
        closes the socket (4408)."""
        if not frames or self.closed:
            return
        try:
            self.queue.put_nowait(frames)
        except asyncio.QueueFull:
            self._too_slow()

    def _too_slow(self) -> None:
        log.info("closing a socket of user %s: send queue full", self.user_id)
        self.close(TOO_SLOW, "too slow: send queue full")

    def remember(self, item_id: int, state: int) -> None:
        self.shown[item_id] = state
        self.shown.move_to_end(item_id)
        if len(self.shown) > SHOWN_LIMIT:
            self.shown.popitem(last=False)

    def remember_items(self, items: Iterable[InboxItem]) -> None:
        for item in items:
            self.remember(item["id"], state_of(item))

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
        out: list[str] = []
        counts = None
        for d in deliveries:
            if d.seq <= self.after_seq:
                continue
            counts = d.counts
            if d.kind in ("new", "update"):
                # A new item, or one a grouped notification moved to the top.
                if d.position <= self.last_position:
                    continue  # already sent by a snapshot
                self.last_position = d.position
                self.remember(d.item_id, d.new)
                if not d.new & QUIET:  # an `inbox` or `muted` delivery is not pushed
                    out.append(d.frame)
            elif d.kind == "bulk":
                # Too many items changed to tell one by one: the client reloads
                # what it shows, and what this socket knew of them is stale.
                self.shown.clear()
                if self.extended:
                    out.append(frames.frame("refresh", items=d.items))
            else:
                known = self.shown.get(d.item_id, d.old)
                now = d.new if d.kind == "change" else known | DELETED
                if known == now:
                    continue  # the client already shows this state
                self.remember(d.item_id, now)
                out += frames.changes(
                    d.item_id, known, now, extended=self.extended, current=d.current
                )
        self._count(counts, out)
        self.send(out)

    def _count(self, counts: Counts | None, out: list[str]) -> None:
        """A `counts` frame, when the counts changed (extended protocol)."""
        if counts is not None and counts != self.counts:
            self.counts = counts
            if self.extended:
                out.append(frames.counts(counts))

    def backfill(
        self,
        items: list[InboxItem],
        states: dict[int, int],
        current: dict[int, InboxItem],
        counts: Counts,
    ) -> None:
        """Catch up from the database after events were lost: state changes of
        items shown before (`states`; a missing one was removed outright, and
        `current` has those that came back into the list or were interacted
        with), items above `last_position`, and the counts."""
        out: list[str] = []
        for item_id, known in list(self.shown.items()):
            now = states.get(item_id, known | DELETED)
            if now == known:
                continue
            self.remember(item_id, now)
            out += frames.changes(
                item_id, known, now, extended=self.extended, current=current.get(item_id)
            )
        for item in items:
            if item["position"] > self.last_position:
                self.last_position = item["position"]
                self.remember(item["id"], state_of(item))
                out.append(frames.item(item))
        self._count(counts, out)
        self.send(out)
