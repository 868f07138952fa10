"""Where a publish request's time goes: `python -m bench.publish_path`.

Sequential requests to an otherwise idle server (no sockets): the HTTP floor
(/healthz), authentication plus one query (/api/users/me/), publishing to a
tag without and with 50 subscribers (back to back, then 20 ms apart as in the
latency scenario), and the same insert by plain SQL. Medians of 100 requests
each.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from .scenarios import http_client, post_json
from .server import Seed, Server

ROUNDS = 100


async def median_ms(call: Callable[[], Awaitable[object]], gap: float = 0.0) -> float:
    """Median of ROUNDS calls, back to back or `gap` seconds apart."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(gap)
    return round(statistics.median(times), 2)


async def main() -> None:
    server = Server()
    seed = await Seed.connect(server.database_url)
    try:
        ids = await seed.users("path", 50)
        fifty = await seed.tag("fifty", ids)
        nobody = await seed.tag("nobody", [])
        server.start()
        async with http_client(server.http, server.token(ids[0])) as http:

            async def get(path: str) -> None:
                async with http.get(path) as response:
                    await response.read()

            def publish(tag: int) -> Callable[[], Awaitable[object]]:
                return lambda: post_json(http, "/api/notifications/", {"message": "x", "tag": tag})

            rows = {
                "GET /healthz": await median_ms(lambda: get("/healthz")),
                "GET /api/users/me/ (auth + 1 query)": await median_ms(
                    lambda: get("/api/users/me/")
                ),
                "POST /api/notifications/, 0 subscribers": await median_ms(publish(nobody)),
                "POST /api/notifications/, 50 subscribers": await median_ms(publish(fifty)),
                # As in the latency scenario: every process idles between requests.
                "... the same, 20 ms apart": await median_ms(publish(fifty), gap=0.02),
                "INSERT INTO notification by SQL, 50 subscribers": await median_ms(
                    lambda: seed.conn.execute(
                        "INSERT INTO notification (tag_id, message) VALUES ($1, 'x')", fifty
                    )
                ),
            }
    finally:
        await seed.close()
        server.close()
    for name, value in rows.items():
        print(f"{name:<50} {value:>6} ms")


if __name__ == "__main__":
    asyncio.run(main())
