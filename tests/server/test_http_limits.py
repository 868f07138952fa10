"""HTTP limits of the server itself (citelink.server.connection_guards): request heads, the
time a connection may take to send one, keep-alive, and connection caps.
Each is tested at the limit and past it, with raw TCP clients."""

from __future__ import annotations

import asyncio
import time

import httpx
import websockets

from tests.support.attack import ATTACKER, BYSTANDER, Connections, request
from tests.support.world import World
from tests.support.wsclient import open_socket, serving

HEAD_LIMITS = {"http_max_header_bytes": 4096, "http_max_headers": 20}


async def test_request_heads_past_the_limits_are_answered_431(settings, world: World):
    async with serving(settings, **HEAD_LIMITS) as server, Connections(server.port) as raws:
        # At the limits: 20 header lines, a head of about 4 KiB.
        raw = await raws.open()
        headers = {f"x-pad-{i}": "p" * 180 for i in range(18)} | {"connection": "close"}
        assert len(request(**headers)) < 4096
        await raw.send(request(**headers))
        status, body, _ = await raw.answer(within=1)
        assert (status, body) == (200, {"status": "ok"})

        # One line more.
        raw = await raws.open()
        await raw.send(request(**{f"x-{i}": "1" for i in range(20)}))
        status, body, data = await raw.answer()
        assert status == 431
        assert body == {"detail": "more than 20 request headers"}
        assert b"connection: close" in data and b"x-content-type-options: nosniff" in data

        # Header lines without end, a kilobyte a write, as a client that never
        # stops: refused once 4 KiB came, the rest is not read.
        raw = await raws.open()
        answer = asyncio.create_task(raw.answer(within=10))
        await raw.send(b"GET / HTTP/1.1\r\n")
        sent = 0
        while sent < 1024 * 1024 and not answer.done():
            if not await raw.send(b"x-endless: " + b"e" * 1000 + b"\r\n"):
                break
            sent += 1013
            await asyncio.sleep(0.001)
        status, body, _ = await answer
        assert (status, body) == (431, {"detail": "request head larger than 4096 bytes"})

        # One header line without end: the same.
        raw = await raws.open()
        answer = asyncio.create_task(raw.answer(within=10))
        await raw.send(b"GET / HTTP/1.1\r\nx-long: ")
        for _ in range(1000):
            if answer.done() or not await raw.send(b"l" * 1000):
                break
            await asyncio.sleep(0.001)
        assert (await answer)[0] == 431

        # The server keeps serving.
        async with httpx.AsyncClient(base_url=server.http) as client:
            r = await client.get("/api/inbox/counts/", headers=world.alice.headers)
            assert r.status_code == 200


async def test_a_head_must_come_in_time_and_idle_connections_are_closed(settings, world: World):
    async with (
        serving(settings, http_header_seconds=0.5, http_keepalive_seconds=0.3) as server,
        Connections(server.port) as raws,
    ):
        started = time.monotonic()
        idle = await raws.open()
        slow = await raws.open()
        await slow.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        keepalive = await raws.open()
        await keepalive.send(request())

        # Nothing sent: closed without a word at the deadline.
        assert await idle.answer(within=2) == (None, None, b"")
        assert 0.4 < time.monotonic() - started < 1.5
        # Part of a head (slowloris): 408.
        status, body, _ = await slow.answer(within=2)
        assert (status, body) == (408, {"detail": "request head not received in time"})
        # Answered, then idle: closed after the keep-alive time.
        status, _, data = await keepalive.answer(within=2)
        assert status == 200 and data.count(b"HTTP/1.1") == 1

        # A client that trickles one request after another in time is served.
        raw = await raws.open()
        for _ in range(3):
            await raw.send(request())
            assert (await raw.reader.readuntil(b'"ok"}')).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.2)


async def test_a_connection_serves_at_most_http_keepalive_requests(settings, world: World):
    async with (
        serving(settings, http_keepalive_requests=3) as server,
        Connections(server.port) as raws,
    ):
        raw = await raws.open()
        for _ in range(5):
            await raw.send(request())
        # Three answers, the last saying it is the last, then the end.
        data = await raw.read_all()
        assert data.count(b"HTTP/1.1 200") == 3
        assert data.count(b"connection: close") == 1


async def test_connections_per_client_address_are_capped(settings, world: World):
    """127.0.0.2 and 127.0.0.3 stand for two hosts; the trusted proxy (the
    test's own 127.0.0.1 here) is not capped."""
    async with (
        serving(settings, max_connections_per_client=5) as server,
        Connections(server.port) as raws,
    ):
        attacker = [await raws.open(ATTACKER) for _ in range(5)]
        # The sixth is closed at once, without an answer.
        sixth = await raws.open(ATTACKER)
        assert await sixth.closed(within=1)
        # Sockets count too: the attacker has no room for one...
        url = f"{server.ws}/ws/notifications/?token={world.alice.token}"
        try:
            async with websockets.connect(url, open_timeout=2, local_addr=(ATTACKER, 0)) as ws:
                raise AssertionError(f"a socket opened past the cap: {ws}")
        except (websockets.InvalidHandshake, OSError, EOFError, TimeoutError):
            pass
        # ...while another host is served, HTTP and WebSocket alike.
        bystander = [await raws.open(BYSTANDER) for _ in range(4)]
        await bystander[0].send(request())
        assert (await bystander[0].reader.readuntil(b'"ok"}')).startswith(b"HTTP/1.1 200")
        async with open_socket(server, world.bob.token, local_addr=(BYSTANDER, 0)) as ws:
            assert await ws.request("ping") == {"type": "pong"}
            # The proxy's address has no cap of its own.
            proxied = [await raws.open() for _ in range(10)]
            for raw in proxied:
                await raw.send(request())
                assert (await raw.reader.readuntil(b'"ok"}')).startswith(b"HTTP/1.1 200")
        # A connection closed frees its place.
        attacker.pop().close()
        await asyncio.sleep(0.1)
        again = await raws.open(ATTACKER)
        await again.send(request())
        assert (await again.reader.readuntil(b'"ok"}')).startswith(b"HTTP/1.1 200")


async def test_at_the_connection_cap_idle_connections_make_room(settings, world: World):
    async with (
        serving(settings, max_connections=10) as server,
        Connections(server.port) as raws,
    ):
        # Ten connections that never send a request fill the server...
        idle = [await raws.open() for _ in range(10)]
        # ...yet a real client gets in: the one that waited longest is closed.
        async with httpx.AsyncClient(base_url=server.http) as client:
            r = await client.get("/api/inbox/counts/", headers=world.alice.headers)
            assert r.json()["unread"] == r.json()["total"] == 2
        assert await idle[0].closed(within=1)
        assert not await idle[1].closed(within=0.2)
        for raw in idle:
            raw.close()
            await raw.writer.wait_closed()
        await asyncio.sleep(0.1)

        # Ten open sockets are busy, not waiting: the next connection is refused.
        async with asyncio.TaskGroup() as group:
            sockets = [group.create_task(_open(server, world.alice.token)) for _ in range(10)]
        refused = await raws.open()
        assert await refused.answer(within=1) == (None, None, b"")
        for task in sockets:
            await task.result().close()
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=server.http) as client:
            assert (await client.get("/healthz")).status_code == 200


async def _open(server, token: str) -> websockets.ClientConnection:
    url = f"{server.ws}/ws/notifications/?token={token}"
    return await websockets.connect(url)


async def test_every_answer_says_nosniff(client: httpx.AsyncClient, world: World):
    answers = [
        await client.get("/"),
        await client.get("/openapi.json"),
        await client.get("/api/inbox/", headers=world.alice.headers),
        await client.get("/api/inbox/"),
        await client.get("/no/such/page"),
        await client.post("/api/token/", content=b"{"),
        await client.get("/healthz"),
    ]
    assert [r.headers.get("x-content-type-options") for r in answers] == ["nosniff"] * 7
