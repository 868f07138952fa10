"""Helpers for the WebSocket tests: a JSON client over `websockets`, publishing
by plain SQL, and a server with settings of the test's own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from citelink.settings import Settings

from .conftest import RunningServer, start_server

WAIT = 5.0


class Socket:
    """A real WebSocket client that speaks JSON frames."""

    def __init__(self, connection: ClientConnection):
        self.connection = connection

    async def send(self, **frame: Any) -> None:
        await self.connection.send(orjson.dumps(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def recv(self, within: float = WAIT) -> dict:
        async with asyncio.timeout(within):
            return orjson.loads(await self.connection.recv())

    async def recv_until(self, type_: str, within: float = WAIT) -> list[dict]:
        """Every frame up to and including the first of `type_`."""
        frames: list[dict] = []
        async with asyncio.timeout(within):
            while not frames or frames[-1]["type"] != type_:
                frames.append(orjson.loads(await self.connection.recv()))
        return frames

    async def until_message(self, message: str, within: float = WAIT) -> list[dict]:
        """Every frame up to and including the push of a notification `message`."""
        frames: list[dict] = []
        async with asyncio.timeout(within):
            while not frames or frames[-1].get("message") != message:
                frames.append(orjson.loads(await self.connection.recv()))
        return frames

    async def request(self, type_: str, within: float = WAIT, **fields: Any) -> dict:
        """Send a frame and return the next frame (the socket must be otherwise quiet)."""
        await self.send(type=type_, **fields)
        return await self.recv(within)

    async def close_code(self, within: float = WAIT) -> int | None:
        """Read until the server closes; the close code it sent."""
        async with asyncio.timeout(within):
            try:
                while True:
                    await self.connection.recv()
            except websockets.ConnectionClosed:
                pass
        return self.connection.close_code

    async def close(self) -> None:
        await self.connection.close()


@asynccontextmanager
async def open_socket(server: RunningServer, token: str, **options: Any) -> AsyncIterator[Socket]:
    url = f"{server.ws}/ws/notifications/?token={token}"
    async with websockets.connect(url, max_size=None, **options) as connection:
        yield Socket(connection)


@asynccontextmanager
async def serving(settings: Settings, **changes: Any) -> AsyncIterator[RunningServer]:
    """A server of its own, with some settings changed."""
    running = await start_server(dataclasses.replace(settings, **changes))
    try:
        yield running
    finally:
        await running.stop()


async def publish(conn: asyncpg.Connection, tag_id: int, message: str) -> int:
    """Publish by plain SQL, as psql or a cron job would; the notification id."""
    return await conn.fetchval(
        "INSERT INTO notification (tag_id, message) VALUES ($1, $2) RETURNING id",
        tag_id,
        message,
    )


def messages(frames: list[dict]) -> list[str]:
    return [f["message"] for f in frames if f["type"] == "notification"]
