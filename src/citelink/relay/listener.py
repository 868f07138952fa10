"""The process's one LISTEN connection on `citelink_events`.

A dedicated asyncpg connection, outside the pool: a pooled connection may be
reset or recycled under a listener, and one connection per process is all the
database needs to feed every socket here (events carry the user id; the hub
routes them in memory).

asyncpg does not notice a dead peer by itself, so death is detected two ways:
the connection's termination callback (server restart, pg_terminate_backend)
and a periodic probe, a NOTIFY on a channel private to this process that must
come back within the probe interval (a half-open TCP connection or a frozen
server never calls the callback). Then: reconnect with jittered exponential
backoff, LISTEN again, and have the hub back-fill every connected socket from
the tables, because NOTIFYs sent while nobody listened are gone for good.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets

import asyncpg

from citelink import metrics
from citelink.db.connection import ERRORS, Queryable
from citelink.problems import database_failure
from citelink.relay.events import CHANNEL, parse_event
from citelink.relay.hub import Hub

log = logging.getLogger("citelink.relay.listener")

CONNECT_TIMEOUT = 5.0
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect `attempt` (0, 1, ...): exponential, capped,
    half of it random so that many processes do not reconnect in step."""
    # The exponent is bounded: past 2**1023 a float overflows, and the cap is
    # reached long before (the database may stay away for hours).
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 64))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Listener:
    """Keeps one connection LISTENing and feeds a hub; `alive` while it does.

    Built before the hub, which takes `barrier` and `reconnect` as its
    callbacks; `start(hub)` then feeds it."""

    def __init__(self, url: str, *, probe_seconds: float = 5.0):
        self._url = url
        self._hub: Hub | None = None
        self._probe_seconds = probe_seconds
        self._probe_channel = f"citelink_probe_{os.getpid()}_{secrets.token_hex(4)}"
        self._replies: dict[str, asyncio.Future[None]] = {}
        self._broken = asyncio.Event()
        self._alive = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """LISTENing, and every socket has been back-filled since the last loss."""
        return self._alive.is_set()

    async def start(self, hub: Hub, wait: float = 5.0) -> None:
        """Start listening for `hub`; give the first connection `wait` seconds
        (the app starts anyway, not ready, if the database is slow to answer)."""
        self._hub = hub
        self._task = asyncio.create_task(self._run(hub), name="citelink-listener")
        try:
            async with asyncio.timeout(wait):
                await self._alive.wait()
        except TimeoutError:
            log.warning("not listening yet; retrying in the background")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def reconnect(self) -> None:
        """Drop the connection and start over (used when the hub could not render)."""
        self._broken.set()

    async def _run(self, hub: Hub) -> None:
        attempt = 0
        # A line when the database goes and one when it is back, not one per
        # attempt (the attempts, with tracebacks, at debug level).
        down = False
        while True:
            try:
                conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
            except ERRORS as exc:
                if not down:
                    why = database_failure(exc) or repr(exc)
                    log.warning("database unavailable (%s); retrying until it is back", why)
                    down = True
                log.debug("cannot connect to listen (attempt %d)", attempt + 1, exc_info=True)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            self._broken = broken = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=broken: lost.set())
            try:
                await conn.add_listener(CHANNEL, self._on_event)
                await conn.add_listener(self._probe_channel, self._on_probe)
                await hub.resync()
                self._alive.set()
                attempt = 0
                if down:
                    log.info("database available again; listening on %s", CHANNEL)
                    down = False
                else:
                    log.info("listening on %s", CHANNEL)
                await self._watch(conn, broken)
                log.warning("listener connection lost; reconnecting")
                metrics.LISTENER_RECONNECTS.inc()
            except Exception as exc:
                # Whatever went wrong (the database went away mid back-fill, most
                # likely), the way out is the same: start over.
                log.warning("listener failed: %r; reconnecting", exc)
                metrics.LISTENER_RECONNECTS.inc()
            finally:
                self._alive.clear()
                hub.lost()
                conn.terminate()
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def _watch(self, conn: asyncpg.Connection, broken: asyncio.Event) -> None:
        """Return when the connection is known, or found by a probe, to be dead."""
        while True:
            try:
                async with asyncio.timeout(self._probe_seconds):
                    await broken.wait()
                return
            except TimeoutError:
                pass
            if not await self.barrier(conn):
                log.warning("listener probe got no answer in %ss", self._probe_seconds)
                return

    async def barrier(self, conn: Queryable) -> bool:
        """Send a NOTIFY on the private channel through `conn` and wait for it
        here. True means every event committed before the call has been
        received (delivery is in commit order); False, no answer in time.
        Through the listening connection itself, this is the liveness probe."""
        token = secrets.token_hex(8)
        self._replies[token] = reply = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._probe_seconds):
                await conn.execute("SELECT pg_notify($1, $2)", self._probe_channel, token)
                await reply
            return True
        except (TimeoutError, *ERRORS):
            return False
        finally:
            self._replies.pop(token, None)

    # asyncpg hands payloads over as text; its stubs say object.
    def _on_probe(self, conn: object, pid: int, channel: str, payload: object) -> None:
        reply = self._replies.get(str(payload))
        if reply is not None and not reply.done():
            reply.set_result(None)

    def _on_event(self, conn: object, pid: int, channel: str, payload: object) -> None:
        event = parse_event(str(payload))
        if event is None:
            log.debug("ignoring a foreign payload on %s: %.80r", CHANNEL, payload)
            return
        assert self._hub is not None
        metrics.event_received(event.kind)
        self._hub.publish(event)
