"""Clients that stop answering the server's keepalive pings: closed with 1011,
quietly (no traceback), while pushes keep flowing to them and to others; and
one that stops reading as well is gone within the close timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from citelink.server.uvicorn_server import create_server
from citelink.settings import Settings
from tests.support.data import publish
from tests.support.servers import RunningServer
from tests.support.world import World
from tests.support.wsclient import StalledSocket, open_socket

PING_SECONDS = 0.5


@asynccontextmanager
async def pinging(settings: Settings, **changes) -> AsyncIterator[RunningServer]:
    """A server that pings every PING_SECONDS and waits as long for the pong."""
    server = create_server(
        dataclasses.replace(settings, **changes),
        "127.0.0.1",
        0,
        log_level="warning",
        timeout_graceful_shutdown=5,
        ws_ping_interval=PING_SECONDS,
        ws_ping_timeout=PING_SECONDS,
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    running = RunningServer(server, task, server.servers[0].sockets[0].getsockname()[1])
    try:
        yield running
    finally:
        await running.stop()


async def test_clients_that_stop_answering_pings_are_closed_quietly(
    settings, world: World, conn, caplog
):
    """10 sockets whose client sends frames all along but never answers a
    ping (and reads nothing: the kernel buffers take the answers), while
    notifications come: each is closed with 1011 when its ping times out, in
    the middle of its replies, and nothing is logged as an error. (A client
    that goes on writing to a closed connection may find it reset instead.)
    bob answers his pings and gets every push."""
    async with (
        pinging(settings, ws_frames_per_second=1_000_000) as server,
        open_socket(server, world.bob.token) as bob,
    ):
        silent = [await StalledSocket.open(server, world.alice.token) for _ in range(10)]
        messages = [f"m{n}" for n in range(100)]
        # bob reads all along: a client that does not read cannot answer pings.
        pushed = asyncio.create_task(bob.until_message(messages[-1], within=30))
        deadline = time.monotonic() + 4 * PING_SECONDS
        while time.monotonic() < deadline:
            for socket in silent:
                socket.send(type="ping")
            if messages:
                await publish(conn, world.news, messages.pop(0))
            await asyncio.sleep(0)
        # What a slow machine did not publish within the pings' time.
        for message in messages:
            await publish(conn, world.news, message)
        frames = await pushed
        codes = await asyncio.gather(*(closed_with(s) for s in silent))
        # Only bob's connection is left.
        assert len(server.server.server_state.connections) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert set(codes) <= {1011, "reset"}
    assert [f["message"] for f in frames if f["type"] == "notification"] == [
        f"m{n}" for n in range(100)
    ]


async def closed_with(socket: StalledSocket) -> int | str | None:
    """The close code the server sent, or "reset"."""
    try:
        return await socket.close_code()
    except ConnectionError:
        return "reset"


@pytest.mark.slow
async def test_a_client_that_stops_reading_and_answering_is_dropped(settings, world: World, conn):
    """Its send buffer never drains, so the close frame never goes out: the
    connection is aborted close_timeout (10 s) after the ping timed out."""
    async with pinging(settings, ws_send_queue=100_000) as server:
        stalled = await StalledSocket.open(server, world.alice.token)
        connections = server.server.server_state.connections
        assert len(connections) == 1
        # Far more than the kernel buffers of one connection hold.
        for _ in range(40):
            await conn.execute(
                "INSERT INTO notification (tag_id, message) "
                "SELECT $1, $2 FROM generate_series(1, 10)",
                world.news,
                "x" * 20_000,
            )
        started = time.monotonic()
        for _ in range(200):
            if not connections:
                break
            await asyncio.sleep(0.1)
        assert connections == set()
        assert time.monotonic() - started > 5
        await stalled.close()
