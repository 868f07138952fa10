"""WebSocket delivery figures against a running citelink server.

    python scripts/ws_latency.py --url http://127.0.0.1:8000 --username admin --password PW

1. POST → socket latency: one subscriber socket; `--rounds` notifications are
   published one after another with POST /api/notifications/; for each, the
   time from sending the POST until the push arrives on the socket.
2. Fan-out: `--sockets` users, one socket each, all subscribed to one tag;
   `--fan-rounds` notifications; for each, the time from sending the POST
   until the first, the median and the last socket has the push.

Everything goes through the public API (users, tags, subscriptions, tokens
are created with the staff account given), so it runs against any server
whose sign-in throttle lets one address sign in `--sockets` users in a row:
start it with CITELINK_LOGIN_ATTEMPTS_PER_CLIENT=0.
The sockets live in `--processes` client processes, apart from the server
and from the process that POSTs; arrival times are time.monotonic_ns(), one
clock for every process on Linux. Needs httpx and websockets (dev extras).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import secrets
import statistics
import sys
import time
from multiprocessing.connection import Connection

import httpx
import orjson
import websockets

PASSWORD = "bench-" + secrets.token_hex(8)


def ws_url(base: str, token: str) -> str:
    return base.replace("http", "ws", 1).rstrip("/") + f"/ws/notifications/?token={token}"


# Client processes -------------------------------------------------------------


def client_process(base: str, tokens: list[str], pipe: Connection) -> None:
    """Hold one socket per token; on ("wait", message), answer with the arrival
    time of that message on every socket."""
    asyncio.run(_client_main(base, tokens, pipe))


async def _client_main(base: str, tokens: list[str], pipe: Connection) -> None:
    arrivals: dict[str, list[int]] = {}
    arrived = asyncio.Event()

    async def hold(token: str, opened: asyncio.Event) -> None:
        async with websockets.connect(ws_url(base, token), max_size=None) as ws:
            opened.set()
            async for raw in ws:
                now = time.monotonic_ns()
                frame = orjson.loads(raw)
                if frame["type"] == "notification":
                    arrivals.setdefault(frame["message"], []).append(now)
                    arrived.set()

    opened = [asyncio.Event() for _ in tokens]
    tasks = []
    for i in range(0, len(tokens), 50):  # connect in waves, not 1,000 at once
        tasks += [
            asyncio.create_task(hold(t, o))
            for t, o in zip(tokens[i : i + 50], opened[i : i + 50], strict=True)
        ]
        await asyncio.gather(*(o.wait() for o in opened[i : i + 50]))
    pipe.send("ready")
    while (command := await asyncio.to_thread(pipe.recv)) != "stop":
        _, message = command
        async with asyncio.timeout(30):
            while len(arrivals.get(message, ())) < len(tokens):
                arrived.clear()
                await arrived.wait()
        pipe.send(arrivals.pop(message))
    for task in tasks:
        task.cancel()


# Main process -----------------------------------------------------------------


async def make_users(http: httpx.AsyncClient, prefix: str, count: int, tag: int) -> list[str]:
    """`count` users subscribed to `tag`; their access tokens."""
    limit = asyncio.Semaphore(8)  # argon2 hashing on the server is the slow part

    async def one(i: int) -> str:
        async with limit:
            name = f"{prefix}-{i}"
            user = (
                (await http.post("/api/users/", json={"username": name, "password": PASSWORD}))
                .raise_for_status()
                .json()
            )
            (
                await http.post("/api/subscriptions/", json={"user": user["id"], "tag": tag})
            ).raise_for_status()
            signed = await http.post("/api/token/", json={"username": name, "password": PASSWORD})
            return signed.raise_for_status().json()["access"]

    return await asyncio.gather(*(one(i) for i in range(count)))


def ms(ns: float) -> str:
    return f"{ns / 1e6:7.2f} ms"


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return f"p50 {ms(at(0.5))}  p95 {ms(at(0.95))}  p99 {ms(at(0.99))}  max {ms(ordered[-1])}"


async def latency(http: httpx.AsyncClient, base: str, prefix: str, rounds: int) -> None:
    tag = (
        (await http.post("/api/tags/", json={"name": f"{prefix}-one"}))
        .raise_for_status()
        .json()["id"]
    )
    (token,) = await make_users(http, f"{prefix}-solo", 1, tag)
    pushes, posts = [], []

    async def post(message: str) -> int:
        response = await http.post("/api/notifications/", json={"message": message, "tag": tag})
        response.raise_for_status()
        return time.monotonic_ns()

    async with websockets.connect(ws_url(base, token), max_size=None) as ws:
        for i in range(rounds + 5):
            message = f"latency {i}"
            start = time.monotonic_ns()
            answered = asyncio.create_task(post(message))
            while (frame := orjson.loads(await ws.recv()))["type"] != "notification":
                pass
            pushed = time.monotonic_ns()
            assert frame["message"] == message
            if i >= 5:  # warm-up rounds left out
                pushes.append(pushed - start)
                posts.append(await answered - start)
            else:
                await answered
    print(f"POST → socket push ({rounds} rounds)   {percentiles(pushes)}")
    print(f"POST → 201 response           {percentiles(posts)}")


async def fan_out(
    http: httpx.AsyncClient, base: str, prefix: str, sockets: int, rounds: int, processes: int
) -> None:
    tag = (
        (await http.post("/api/tags/", json={"name": f"{prefix}-all"}))
        .raise_for_status()
        .json()["id"]
    )
    started = time.monotonic()
    tokens = await make_users(http, f"{prefix}-fan", sockets, tag)
    print(f"(created {sockets} users in {time.monotonic() - started:.1f} s)")
    context = mp.get_context("spawn")
    workers = []
    for k in range(processes):
        ours, theirs = context.Pipe()
        process = context.Process(target=client_process, args=(base, tokens[k::processes], theirs))
        process.start()
        workers.append((process, ours))
    for _, pipe in workers:
        assert await asyncio.to_thread(pipe.recv) == "ready"
    print(f"({sockets} sockets connected in {processes} client process(es))")
    first, middle, last, committed = [], [], [], []
    for i in range(rounds + 2):
        message = f"fan-out {i}"
        start = time.monotonic_ns()
        response = await http.post("/api/notifications/", json={"message": message, "tag": tag})
        answered = time.monotonic_ns()
        assert response.raise_for_status().json()["recipients"] == sockets
        times: list[int] = []
        for _, pipe in workers:
            pipe.send(("wait", message))
        for _, pipe in workers:
            times += await asyncio.to_thread(pipe.recv)
        assert len(times) == sockets
        if i >= 2:  # warm-up rounds left out
            times = sorted(t - start for t in times)
            first.append(times[0])
            middle.append(times[len(times) // 2])
            last.append(times[-1])
            committed.append(answered - start)
    for process, pipe in workers:
        pipe.send("stop")
        process.join(10)
    print(f"one notification → {sockets} sockets ({rounds} rounds, median of rounds):")
    print(f"  201 response {ms(statistics.median(committed))}  (fan-out committed)")
    print(f"  first socket {ms(statistics.median(first))}")
    print(f"  half of them {ms(statistics.median(middle))}")
    print(f"  all of them  {ms(statistics.median(last))}   (worst round {ms(max(last))})")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", required=True, help="a staff user")
    parser.add_argument("--password", required=True)
    parser.add_argument("--rounds", type=int, default=200, help="latency rounds (default 200)")
    parser.add_argument("--sockets", type=int, default=1000, help="fan-out sockets (default 1000)")
    parser.add_argument("--fan-rounds", type=int, default=10, help="fan-out rounds (default 10)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    args = parser.parse_args()
    prefix = "bench-" + secrets.token_hex(3)
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as http:
        signed = await http.post(
            "/api/token/", json={"username": args.username, "password": args.password}
        )
        http.headers["Authorization"] = f"Bearer {signed.raise_for_status().json()['access']}"
        await latency(http, args.url, prefix, args.rounds)
        await fan_out(http, args.url, prefix, args.sockets, args.fan_rounds, args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
