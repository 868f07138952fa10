"""A TCP proxy in front of PostgreSQL that can stop passing bytes without
closing anything (a half-open connection, which no termination callback sees),
cut every connection and refuse new ones (a dropped link), or pass on a close
by the server late (a slow link)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class FreezableProxy:
    """127.0.0.1:<port> → the server of `url` (TCP or Unix socket)."""

    def __init__(self, url: str):
        self.url = url
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.refusing = False
        # How long a connection the server closed stays open towards the client.
        self.close_delay = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> str:
        """Start; the URL that reaches the same database through the proxy."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.url)
        user = parts.username or "postgres"
        return urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", parts.path, "", ""))

    async def stop(self) -> None:
        assert self._server
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        """Close every connection now, and each new one as soon as it is made."""
        self.refusing = True
        for task in self._tasks:
            task.cancel()

    def restore(self) -> None:
        self.refusing = False

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.url)
        host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
        port = parts.port or 5432
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await self._upstream()
        except OSError:  # the server is down: so is this connection
            writer.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        if pipes[1] in done and self.close_delay:
            await asyncio.sleep(self.close_delay)
        for task in pipes:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
        self._tasks.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
