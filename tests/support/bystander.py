"""Another user's requests during an attack, from a process of its own so
that the attack's clients in the test process do not delay them.

    python -m tests.support.bystander URL AUTHORIZATION

makes `GET /api/inbox/counts/` requests one after the other (20 ms apart)
from 127.0.0.3 until its stdin closes, then prints its statuses, failures and
latencies as one JSON line.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
import orjson

ADDRESS = "127.0.0.3"
PATH = "/api/inbox/counts/"


async def main(url: str, authorization: str) -> None:
    statuses: dict[int, int] = {}
    failures: list[str] = []
    latencies: list[float] = []
    stdin_closed = asyncio.ensure_future(asyncio.to_thread(sys.stdin.read))
    transport = httpx.AsyncHTTPTransport(local_address=ADDRESS)
    headers = {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
        while not stdin_closed.done():
            started = time.monotonic()
            try:
                r = await client.get(PATH, headers=headers)
            except httpx.TransportError as exc:
                failures.append(repr(exc))
            else:
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    result = {"statuses": statuses, "failures": failures, "latencies": latencies}
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
