"""Helpers for the WebSocket tests: a JSON client over `websockets`, publishing
by plain SQL, and a server with settings of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from citelink.relay import frame_shapes
from citelink.relay.protocol import EXTENDED
from citelink.settings import Settings
from tests.support.servers import RunningServer, start_server

WAIT = 5.0


def checked(text: str | bytes) -> dict:
    """A frame the server sent, checked against its declared type."""
    frame = orjson.loads(text)
    frame_shapes.check(frame)
    return frame


class Address:
    """Where a server listens (a RunningServer has the same attributes)."""

    def __init__(self, port: int):
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"


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
            return checked(await self.connection.recv())

    async def recv_until(self, type_: str, within: float = WAIT) -> list[dict]:
        """Every frame up to and including the first of `type_`."""
        frames: list[dict] = []
        async with asyncio.timeout(within):
            while not frames or frames[-1]["type"] != type_:
                frames.append(checked(await self.connection.recv()))
        return frames

    async def until_message(self, message: str, within: float = WAIT) -> list[dict]:
        """Every frame up to and including the push of a notification `message`."""
        frames: list[dict] = []
        async with asyncio.timeout(within):
            while not frames or frames[-1].get("message") != message:
                frames.append(checked(await self.connection.recv()))
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
async def open_socket(
    server: RunningServer | Address, token: str, *, seed: bool = False, **options: Any
) -> AsyncIterator[Socket]:
    """The extended protocol (citelink.v1), or with `seed` the seed's (no subprotocol)."""
    url = f"{server.ws}/ws/notifications/?token={token}"
    protocols = None if seed else [EXTENDED]
    async with websockets.connect(
        url, max_size=None, subprotocols=protocols, **options
    ) as connection:
        yield Socket(connection)


class StalledSocket:
    """A client that reads only when told to: in between, its small receive
    buffer fills and the server's writes back up, as with a client that hangs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str):
        self.reader, self.writer = reader, writer
        self.protocol = ClientProtocol(parse_uri(url), subprotocols=[EXTENDED], max_size=None)
        self.frames: list[dict] = []

    @classmethod
    async def open(cls, server: RunningServer, token: str) -> StalledSocket:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", server.port))
        # A small stream limit: asyncio stops reading the socket once it is full.
        reader, writer = await asyncio.open_connection(sock=raw, limit=4096)
        stalled = cls(reader, writer, f"{server.ws}/ws/notifications/?token={token}")
        stalled.protocol.send_request(stalled.protocol.connect())
        stalled._flush()
        while stalled.protocol.state is not State.OPEN:
            # A byte at a time: not one byte past the handshake is read.
            stalled.protocol.receive_data(await reader.read(1))
        return stalled

    def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))

    def send(self, **frame: Any) -> None:
        self.protocol.send_text(orjson.dumps(frame))
        self._flush()

    async def read_until(self, done: Callable[[dict], bool], within: float = WAIT) -> None:
        """Read (into `frames`) until a frame satisfies `done` or the server closes."""
        async with asyncio.timeout(within):
            while self.protocol.close_rcvd is None:
                data = await self.reader.read(65536)
                if not data:
                    return
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        self.frames.append(checked(event.data))
                        if done(self.frames[-1]):
                            return

    async def close_code(self, within: float = WAIT) -> int | None:
        """Read until the server closes; the close code it sent."""
        await self.read_until(lambda frame: False, within)
        await self.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def serving(
    settings: Settings, port: int = 0, **changes: Any
) -> AsyncIterator[RunningServer]:
    """A server of its own (on `port`, if given), with some settings changed."""
    running = await start_server(dataclasses.replace(settings, **changes), port)
    try:
        yield running
    finally:
        await running.stop()


@contextmanager
def logged(logger: str, text: str) -> Iterator[asyncio.Event]:
    """An event set when `logger` logs a message containing `text`."""
    seen = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Watch()
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield seen
    finally:
        target.removeHandler(handler)


def messages(frames: list[dict]) -> list[str]:
    return [f["message"] for f in frames if f["type"] == "notification"]


class Follower:
    """A client that follows one user's feed the way a real one should: it
    records the item id of every `notification` frame and, whenever its socket
    closes or cannot open, reconnects (trying `servers` in turn) and resumes
    after the last id it saw. Pushes and replays must then add up to every
    item exactly once."""

    def __init__(self, servers: list[RunningServer | Address], token: str, after: int = 0):
        self.servers, self.token = servers, token
        self.ids: list[int] = []
        # Every connection starts with a resume after the last id seen.
        self.after = after
        self.reconnects = 0
        self.closes: list[int | None] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._server = 0
        self._conn: ClientConnection | None = None
        # Set once a connection is open (and its resume sent).
        self.connected = asyncio.Event()

    def start(self) -> Follower:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # Connections in a row that ended before their resume was answered: a
        # client backs off a little more after each (the server may be down).
        failures = 0
        while True:
            server = self.servers[self._server % len(self.servers)]
            url = f"{server.ws}/ws/notifications/?token={self.token}"
            failures += 1
            try:
                async with websockets.connect(
                    url, max_size=None, open_timeout=WAIT, subprotocols=[EXTENDED]
                ) as conn:
                    await conn.send(orjson.dumps({"type": "resume", "after": self.after}).decode())
                    self._conn = conn
                    self.connected.set()
                    async for raw in conn:
                        frame = checked(raw)
                        if frame["type"] == "notification":
                            self.ids.append(frame["id"])
                            # Live pushes may come before the replay of a resume.
                            self.after = max(self.after, frame["id"])
                            self._changed.set()
                        elif frame["type"] == "resumed":
                            failures = 0
                    self.closes.append(conn.close_code)
            except websockets.ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                self._server += 1  # that server is gone: the next one
            self.reconnects += 1
            await asyncio.sleep(min(0.05 * failures, 0.5))

    async def drop(self) -> None:
        """Close the current connection, as a client whose network went away
        would find it closed; the follower reconnects and resumes."""
        if self._conn is not None:
            await self._conn.close()

    async def wait_for(self, expected: list[int], within: float) -> None:
        """Until every id of `expected` was seen (or `within` seconds passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while len(self.ids) < len(expected) or not set(expected) <= set(self.ids):
                    self._changed.clear()
                    await self._changed.wait()


def losses_and_duplicates(seen: list[int], expected: list[int]) -> tuple[int, int]:
    """(items never seen, items seen more than once)."""
    return len(set(expected) - set(seen)), len(seen) - len(set(seen))
