"""Prometheus metrics: the instruments, and their text exposition.

Counters and the publish histogram are updated where things happen (one call
in the listener, the socket session and the publish route); the two counted
per event and per delivery are kept as plain integers until sampled. Gauges
are set when sampled, from the state of the process (citelink.server.scrape,
which also serves GET /metrics): this module imports none of the things it
measures.

With `citelink serve --workers N` the workers share one port, so a scrape
reaches any one of them. prometheus-client's multiprocess mode adds them up:
each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (a fresh
directory made by `serve`), and a scrape reads them all. Each worker samples
(gauges, and the tally of the hot paths) once a second for that, and the
worker that answers samples at once, so a worker's figures are at most a
second old.

"""

from __future__ import annotations

import os
from collections import Counter as Tally

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

# Decided at import, as prometheus-client itself decides where values live.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

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
    "POST /api/notifications/ in the database: insert, fan-out and commit (and a wait to "
    "share a statement, group commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PUBLISHES_WAITING = Gauge(
    "citelink_publishes_waiting",
    "publishes waiting to share a statement with others of their publisher (group commit)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PUBLISHES_SHARED = Gauge(
    "citelink_publishes_shared",
    "publishes committed in a statement shared with others, since the process started",
    registry=REGISTRY,
    multiprocess_mode="livesum",
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


def hand_over_tally() -> None:
    """Add the tally of the hot paths to the counters, and start it again."""
    counts = dict(_tally)
    _tally.clear()
    for key, count in counts.items():
        (FRAMES_SENT if key == _FRAMES else EVENTS_RECEIVED.labels(key)).inc(count)


def socket_closed(code: int | None) -> None:
    """Count a socket closed with `code` (None: by the client)."""
    SOCKETS_CLOSED.labels("peer" if code is None else str(code)).inc()


def exposition() -> bytes:
    """Every metric in the text format: this process's, or all workers' summed."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
