"""Another user while an attack runs (bench.attacks), in a process of its own so
that the attack's clients do not delay it. It reads its settings as one JSON
line on stdin, connects, prints "ready", and until stdin closes:

- asks for its counts (GET /api/inbox/counts/), 20 ms after each answer, or,
  given `patch`, sets `is_seen` of that item of its inbox on and off (PATCH);
- has a staff user publish to its tag (POST /api/notifications/) every 250 ms;
- holds a socket (the seed protocol: no subprotocol) and notes when each
  push arrives, reconnecting when the server closes it.

Then it prints what it saw as one JSON line: each request's start (wall
clock), seconds and status, or the error's name, or "pending" when stdin
closed first; each push's message and arrival (wall clock); the close codes
of its socket. HTTP goes from 127.0.0.3 (the attacks' from 127.0.0.2).

    {"http": URL, "ws": URL, "token": ..., "publisher": ..., "tag": ID, "patch": ID or null}
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

ADDRESS = "127.0.0.3"
REST_PAUSE = 0.02
PUBLISH_EVERY = 0.25

# [start (wall clock), seconds or None while pending, status or error name]
Entry = list[Any]


async def requests(
    out: list[Entry], call: Callable[[int], Awaitable[int]], pause: float, *, paced: bool
) -> None:
    """`call(n)` over and over, `pause` after each answer (`paced`: every `pause`
    from the start of the one before, as a publisher on a timer does)."""
    n = 0
    while True:
        entry: Entry = [time.time(), None, "pending"]
        out.append(entry)
        started = time.monotonic()
        try:
            entry[2] = await call(n)
        except (aiohttp.ClientError, TimeoutError) as exc:
            entry[2] = type(exc).__name__
        entry[1] = time.monotonic() - started
        n += 1
        await asyncio.sleep(max(0.0, pause - entry[1]) if paced else pause)


async def listen(ws_url: str, token: str, pushes: dict[str, float], closes: list[Any]) -> None:
    """Note the arrival of each push (its message, first time only)."""
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.ws_connect(
                    f"{ws_url}/ws/notifications/?token={token}", heartbeat=None
                ) as ws:
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue
                        frame = orjson.loads(message.data)
                        if isinstance(frame.get("message"), str):
                            pushes.setdefault(frame["message"], time.time())
                    closes.append(ws.close_code)
            except aiohttp.ClientError as exc:
                closes.append(type(exc).__name__)
            await asyncio.sleep(0.5)


async def main() -> None:
    config = orjson.loads(await asyncio.to_thread(sys.stdin.readline))
    rest: list[Entry] = []
    publishes: list[Entry] = []
    pushes: dict[str, float] = {}
    closes: list[Any] = []
    timeout = aiohttp.ClientTimeout(total=30)
    mine = {"Authorization": f"Bearer {config['token']}"}
    staff = {"Authorization": f"Bearer {config['publisher']}"}

    async with (
        aiohttp.ClientSession(
            config["http"],
            connector=aiohttp.TCPConnector(local_addr=(ADDRESS, 0)),
            timeout=timeout,
        ) as own,
        aiohttp.ClientSession(
            config["http"],
            connector=aiohttp.TCPConnector(local_addr=(ADDRESS, 0)),
            timeout=timeout,
        ) as publisher,
    ):

        async def counts(n: int) -> int:
            async with own.get("/api/inbox/counts/", headers=mine) as r:
                await r.read()
                return r.status

        async def patch(n: int) -> int:
            body = {"is_seen": n % 2 == 0}
            async with own.patch(f"/api/inbox/{config['patch']}/", json=body, headers=mine) as r:
                await r.read()
                return r.status

        async def publish(n: int) -> int:
            body = {"message": f"victim {n}", "tag": config["tag"]}
            async with publisher.post("/api/notifications/", json=body, headers=staff) as r:
                await r.read()
                return r.status

        listener = asyncio.create_task(listen(config["ws"], config["token"], pushes, closes))
        # Ready once the socket is open: a push arrives (the first publish's).
        ready_by, probe = time.monotonic() + 30, -1
        while not pushes and time.monotonic() < ready_by:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await publish(probe)
            probe -= 1
            await asyncio.sleep(0.2)
        pushes.clear()
        print("ready" if not listener.done() else "socket failed", flush=True)

        tasks = [
            listener,
            asyncio.create_task(
                requests(rest, patch if config.get("patch") else counts, REST_PAUSE, paced=False)
            ),
            asyncio.create_task(requests(publishes, publish, PUBLISH_EVERY, paced=True)),
        ]
        await asyncio.to_thread(sys.stdin.read)
        stopped = time.time()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for entry in rest + publishes:
        if entry[1] is None:
            entry[1] = stopped - entry[0]
    result = {"rest": rest, "publishes": publishes, "pushes": pushes, "closes": closes}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(main())
