"""HTTP attacks against `citelink serve` in a process of its own (slow: `pytest
-m slow`), with the default limits: endless request heads, slowloris and idle
connections by the thousand. Each runs for a bounded time while another user
keeps making requests, and checks that they are answered (no 5xx, p99 at most
500 ms), that the attacker's connections are cut as documented, and that the
server's memory stays bounded. The figures are printed at the end of the run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.support.attack import ATTACKER, Bystander, Connections, Raw, peak_rss_mib, rss_mib
from tests.support.processes import citelink_serve
from tests.support.world import World

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# What one attacker sends at most, and for how long.
ENDLESS_BYTES = 10 * 1024 * 1024
ATTACK_SECONDS = 5.0
# How long the slowloris and idle connections are held at most.
HOLD_SECONDS = 15.0


async def endless_heads(raws: Connections) -> tuple[int, list[int | str | None]]:
    """Header lines without end, 64 KiB every 30 ms, for ATTACK_SECONDS or
    ENDLESS_BYTES; on a new connection whenever the server cuts one. (bytes
    sent, the status each connection was answered: None when closed without
    an answer, "open" for the one the attack ended with)."""
    line = b"x-endless: " + b"e" * 1000 + b"\r\n"
    chunk = line * 64
    sent, statuses = 0, []
    deadline = time.monotonic() + ATTACK_SECONDS
    while sent < ENDLESS_BYTES and time.monotonic() < deadline:
        raw = await raws.open(ATTACKER)
        answer = asyncio.create_task(raw.answer(within=ATTACK_SECONDS + 5))
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        cut = False
        while sent < ENDLESS_BYTES and time.monotonic() < deadline and not answer.done():
            if not await raw.send(chunk):
                cut = True
                break
            sent += len(chunk)
            await asyncio.sleep(0.03)
        if answer.done() or cut:
            statuses.append((await answer)[0])
        else:
            answer.cancel()
            statuses.append("open")
        raw.close()
    return sent, statuses


async def test_ten_endless_request_heads(world: World, db_url, tmp_path, figure):
    """Ten attackers send header lines without end (10 MiB each at most)."""
    async with citelink_serve(db_url, tmp_path) as serve:
        pid = serve.process.pid
        idle = rss_mib(pid)
        bystander = await Bystander.start(serve.server.http, world.alice.headers)
        async with Connections(serve.server.port) as raws:
            results = await asyncio.gather(*(endless_heads(raws) for _ in range(10)))
        await bystander.stop()
        peak, after = peak_rss_mib(pid), rss_mib(pid)
    sent = sum(s for s, _ in results)
    statuses = Counter(status for _, answered in results for status in answered)
    figure(
        f"10 attackers sending endless request heads for {ATTACK_SECONDS:.0f} s: "
        f"{sent / 2**20:.0f} MiB sent on {statuses.total()} connections, answers "
        f"{dict(statuses)}; server RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB, after "
        f"{after:.0f} MiB; {bystander.summary()}"
    )
    # Cut with 431; or, reconnecting too fast, closed at once (per-client cap).
    assert set(statuses) <= {431, None, "open"} and statuses["open"] <= 10
    assert statuses[431] >= 10
    assert peak - idle < 64
    assert bystander.failures == [] and set(bystander.statuses) == {200}
    assert bystander.p99_ms() <= 500


async def slowloris(raw: Raw) -> int | None:
    """A request head one byte a second, for as long as the connection lasts."""
    answer = asyncio.create_task(raw.answer(within=HOLD_SECONDS + 5))
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-slow: " + b"s" * 100
    for byte in head:
        if answer.done() or not await raw.send(bytes([byte])):
            break
        await asyncio.sleep(1)
    status, _, _ = await answer
    return status


async def test_slowloris_and_idle_connections_on_1024_open_files(
    world: World, db_url, tmp_path, figure
):
    """With `ulimit -n 1024`: 1,100 idle connections and 500 slowloris ones
    from 16 addresses, then 1,000 idle ones from a single address. Another
    user keeps a connection; a newcomer opens a new one per request."""
    async with citelink_serve(db_url, tmp_path, open_files=1024) as serve:
        pid = serve.process.pid
        idle_rss = rss_mib(pid)
        bystander = await Bystander.start(serve.server.http, world.alice.headers)
        newcomer = {"ok": 0, "failed": 0}

        async def newcomers() -> None:
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.4")
            async with httpx.AsyncClient(base_url=serve.server.http, transport=transport) as h:
                while not stop.is_set():
                    try:
                        r = await h.get("/healthz", headers={"Connection": "close"})
                        newcomer["ok" if r.status_code == 200 else "failed"] += 1
                    except httpx.TransportError:
                        newcomer["failed"] += 1
                    await asyncio.sleep(0.25)

        stop = asyncio.Event()
        started = time.monotonic()
        async with Connections(serve.server.port) as raws:
            sources = [f"127.0.1.{n}" for n in range(1, 17)]
            idle = [await raws.open(sources[n % 16]) for n in range(1100)]
            slow = [await raws.open(sources[n % 16]) for n in range(500)]
            slow_tasks = [asyncio.create_task(slowloris(raw)) for raw in slow]
            single = []
            for _ in range(1000):
                single.append(await raws.open(ATTACKER))
            opened = time.monotonic() - started
            probe = asyncio.create_task(newcomers())
            cut_idle = await asyncio.gather(*(raw.closed(within=HOLD_SECONDS) for raw in idle))
            cut_single = await asyncio.gather(*(raw.closed(within=0.5) for raw in single))
            slow_statuses = await asyncio.gather(*slow_tasks)
            stop.set()
            await probe
        held = time.monotonic() - started
        await bystander.stop()
        peak = peak_rss_mib(pid)
        log = serve.output.decode()
    figure(
        f"{len(idle)} idle and {len(slow)} slowloris connections from 16 addresses, "
        f"1,000 idle from one, server limited to 1,024 open files: opened in {opened:.1f} s; "
        f"{sum(cut_idle)} idle and {slow_statuses.count(408)} slowloris connections cut "
        f"({held:.1f} s after the attack began), {sum(cut_single)} of the single address's "
        f"cut at once; newcomer requests {newcomer}; server RSS idle {idle_rss:.0f} MiB, "
        f"peak {peak:.0f} MiB; {bystander.summary()}"
    )
    assert all(cut_idle)
    # Evicted to make room (closed without an answer), or too late (408).
    assert set(slow_statuses) <= {408, None} and slow_statuses.count(408) > 0
    assert sum(cut_single) >= 800  # all but the 200 a client address may hold
    assert newcomer["failed"] == 0 and newcomer["ok"] > 10
    assert bystander.failures == [] and set(bystander.statuses) == {200}
    assert bystander.p99_ms() <= 500
    assert peak - idle_rss < 128
    assert "Traceback" not in log and "Too many open files" not in log
