"""GET /metrics: the Prometheus metrics (citelink.metrics), sampled from this
process's state, never public.

A scraper sends CITELINK_METRICS_TOKEN as its bearer token (Prometheus:
`authorization: {credentials_file: ...}`); a person, a staff user's access
token. Without either the answer is 401, for a user who is not staff 403.

Gauges are read when sampled: the relay's sockets and their send queues, the
listener, the pool, and the database's NOTIFY queue. With `citelink serve
--workers N` the workers share one port, so a scrape reaches any one of them.
prometheus-client's multiprocess mode adds them up: each worker writes its
values to files in PROMETHEUS_MULTIPROC_DIR (a fresh directory made by
`serve`), and a scrape reads them all. Each worker samples (gauges, and the
tally of the hot paths) once a second for that, and the worker that answers
samples at once, so a worker's figures are at most a second old.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
from collections.abc import Callable, Iterable

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from citelink import metrics
from citelink.db.connection import UNAVAILABLE
from citelink.errors import ApiError
from citelink.identity.callers import authenticate

# The classic text format, which every Prometheus version reads (and the one
# generate_latest writes for citelink's plain metric names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE_SECONDS = 1.0
NOTIFY_QUERY_SECONDS = 1.0


class Sampler:
    """Sets the gauges from this process's state: `queue_depths` gives the
    send queue depth of every open socket, `listening` whether the listener
    is up. With workers it samples every SAMPLE_SECONDS, so that a scrape
    answered by another worker sees this one's figures; without, only when
    scraped (the only process there is)."""

    def __init__(
        self,
        queue_depths: Callable[[], Iterable[int]],
        listening: Callable[[], bool],
        pool: asyncpg.Pool,
        publishes: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ):
        self._queue_depths = queue_depths
        self._listening = listening
        self._pool = pool
        self._publishes = publishes
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Set the gauges now, and hand over the tally."""
        metrics.hand_over_tally()
        depths = list(self._queue_depths())
        metrics.SOCKETS_OPEN.set(len(depths))
        metrics.SEND_QUEUE.set(sum(depths))
        metrics.SEND_QUEUE_LONGEST.set(max(depths, default=0))
        metrics.LISTENER_UP.set(1 if self._listening() else 0)
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        metrics.POOL_OPEN.set(size)
        metrics.POOL_IN_USE.set(size - idle)
        metrics.POOL_MAX.set(self._pool.get_max_size())
        waiting, shared = self._publishes()
        metrics.PUBLISHES_WAITING.set(waiting)
        metrics.PUBLISHES_SHARED.set(shared)

    async def sample_notify_queue(self) -> None:
        """The NOTIFY queue usage of the database server (NaN when it does not answer)."""
        try:
            usage = await self._pool.fetchval(
                "SELECT pg_notification_queue_usage()", timeout=NOTIFY_QUERY_SECONDS
            )
        except (*UNAVAILABLE, asyncpg.PostgresError):
            usage = math.nan
        metrics.NOTIFY_QUEUE_USAGE.set(usage)

    def start(self) -> None:
        if metrics.MULTIPROCESS:
            self._task = asyncio.create_task(self._run(), name="citelink-metrics")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)


def _scraper(request: Request) -> bool:
    expected = request.state.settings.metrics_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (
        expected is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


async def metrics_endpoint(request: Request) -> Response:
    """Every metric in the text format, sampled now for this process."""
    if not _scraper(request):
        user = await authenticate(request)
        if not user.is_staff:
            raise ApiError(403, "staff only (or the CITELINK_METRICS_TOKEN)")
    sampler: Sampler = request.state.sampler
    sampler.sample()
    await sampler.sample_notify_queue()
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
