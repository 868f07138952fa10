"""Prometheus metrics, served at GET /metrics in the text exposition format.

Counters and the publish histogram are updated where things happen (one call
in the listener, the socket session and the publish route); the two counted
per event and per delivery are kept as plain integers until sampled. Gauges
are read from the process's own state when sampled: the hub's sockets and
their send queues, the listener, the pool, and the database's NOTIFY queue.

With `citelink serve --workers N` the workers share one port, so a scrape
reaches any one of them. prometheus-client's multiprocess mode adds them up:
each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (a fresh
directory made by `serve`), and a scrape reads them all. Each worker samples
(gauges, and the tally of the hot paths) once a second for that, and the
worker that answers samples at once, so a worker's figures are at most a
second old.

Who may read them: citelink/api/metrics.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections import Counter as Tally
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from .database import UNAVAILABLE

if TYPE_CHECKING:  # the listener imports this module
    from .hub import Hub
    from .listener import Listener

# Decided at import, as prometheus-client itself decides where values live.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
SAMPLE_SECONDS = 1.0
NOTIFY_QUERY_SECONDS = 1.0

# `_created` timestamps per counter are noise for scrapers that track resets.
disable_created_metrics()
REGISTRY = CollectorRegistry()
if not MULTIPROCESS:
    # CPU, memory and descriptors of this process (not summed over workers).
    ProcessCollector(registry=REGISTRY)

SOCKETS_OPEN = Gauge(
    "citelink_sockets_open",
    "WebSocket connections open (one series per worker: how evenly they spread)",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)
SEND_QUEUE = Gauge(
    "citelink_send_queue_deliveries",
    "deliveries waiting in the send queues of all open sockets",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
SEND_QUEUE_LONGEST = Gauge(
    "citelink_send_queue_longest_deliveries",
    "deliveries waiting for the socket furthest behind (closed with 4408 at "
    "CITELINK_WS_SEND_QUEUE)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
FRAMES_SENT = Counter(
    "citelink_ws_frames_sent",
    "frames written to WebSocket clients (pushes, replies, counts)",
    registry=REGISTRY,
)
SOCKETS_CLOSED = Counter(
    "citelink_sockets_closed",
    "sockets closed or refused, by close code (peer: the client went away)",
    ["code"],
    registry=REGISTRY,
)
LISTENER_UP = Gauge(
    "citelink_listener_up",
    "1 while the LISTEN connection is up and every socket back-filled, else 0 "
    "(one series per worker)",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)
LISTENER_RECONNECTS = Counter(
    "citelink_listener_reconnects",
    "times the LISTEN connection was lost or failed (a reconnect and back-fill follow)",
    registry=REGISTRY,
)
EVENTS_RECEIVED = Counter(
    "citelink_events_received",
    "citelink_events payloads received by the LISTEN connection, by kind",
    ["kind"],
    registry=REGISTRY,
)
NOTIFY_QUEUE_USAGE = Gauge(
    "citelink_notify_queue_usage_ratio",
    "pg_notification_queue_usage(): the share of the server's NOTIFY queue in use; "
    "at 1, every NOTIFY (so every publish) fails",
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
PUBLISH_SECONDS = Histogram(
    "citelink_publish_seconds",
    "POST /api/notifications/ in the database: insert, fan-out and commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
POOL_IN_USE = Gauge(
    "citelink_pool_connections_in_use",
    "pooled database connections lent out",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_OPEN = Gauge(
    "citelink_pool_connections_open",
    "pooled database connections open (in use or idle)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "citelink_pool_connections_max",
    "largest pool size (CITELINK_POOL_SIZE, per process)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# Counts of the hot paths, handed to prometheus-client when sampled: its inc()
# takes a lock (and with workers writes to a file), 1 to 3 µs that a fan-out
# to 100,000 users would pay per event and per delivery; this costs 0.1 µs.
_tally: Tally[str] = Tally()
_FRAMES = ""  # the tally's key for frames sent; event kinds are the others


def event_received(kind: str) -> None:
    """Count one event received by the listener."""
    _tally[kind] += 1


def frames_sent(count: int) -> None:
    """Count frames written to a client."""
    _tally[_FRAMES] += count


def _hand_over_tally() -> None:
    counts = dict(_tally)
    _tally.clear()
    for key, count in counts.items():
        (FRAMES_SENT if key == _FRAMES else EVENTS_RECEIVED.labels(key)).inc(count)


def socket_closed(code: int | None) -> None:
    """Count a socket closed with `code` (None: by the client)."""
    SOCKETS_CLOSED.labels("peer" if code is None else str(code)).inc()


def sample(hub: Hub, listener: Listener, pool: asyncpg.Pool) -> None:
    """Set the gauges from this process's state, and hand over the tally."""
    _hand_over_tally()
    depths = [client.queue.qsize() for client in hub.clients()]
    SOCKETS_OPEN.set(len(depths))
    SEND_QUEUE.set(sum(depths))
    SEND_QUEUE_LONGEST.set(max(depths, default=0))
    LISTENER_UP.set(1 if listener.alive else 0)
    size, idle = pool.get_size(), pool.get_idle_size()
    POOL_OPEN.set(size)
    POOL_IN_USE.set(size - idle)
    POOL_MAX.set(pool.get_max_size())


async def sample_notify_queue(pool: asyncpg.Pool) -> None:
    """The NOTIFY queue usage of the database server (NaN when it does not answer)."""
    try:
        usage = await pool.fetchval(
            "SELECT pg_notification_queue_usage()", timeout=NOTIFY_QUERY_SECONDS
        )
    except (*UNAVAILABLE, asyncpg.PostgresError):
        usage = math.nan
    NOTIFY_QUEUE_USAGE.set(usage)


class Sampler:
    """With workers, samples this process's gauges every SAMPLE_SECONDS, so a
    scrape answered by another worker sees them; without, does nothing (a
    scrape samples the only process there is)."""

    def __init__(self, hub: Hub, listener: Listener, pool: asyncpg.Pool):
        self._state = (hub, listener, pool)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if MULTIPROCESS:
            self._task = asyncio.create_task(self._run(), name="citelink-metrics")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            sample(*self._state)
            await asyncio.sleep(SAMPLE_SECONDS)


def exposition() -> bytes:
    """Every metric in the text format: this process's, or all workers' summed."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
