"""Helpers for the attack tests: raw HTTP connections from chosen loopback
addresses, another user's requests timed while an attack runs, a server's
memory, and links that must never be opened."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from pathlib import Path

import orjson

from tests.support import ROOT

# Linux routes all of 127.0.0.0/8 to the loopback interface, so a client may
# bind any of these as its source address and look like another host.
ATTACKER = "127.0.0.2"
BYSTANDER = "127.0.0.3"

# Links a browser would open on another site, or not as http(s) at all:
# "/\host" and "/<tab>/host" are "//host" to it. The API refuses each; the
# page and the element, which also show what plain SQL wrote, link none.
LINK_ATTACKS = [
    "/\\evil.example/x",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/\x7f/x",
    "/\u0085/x",
    "\\\\evil.example/x",
    "\\/evil.example",
    "//evil.example/x",
    "///evil.example",
    "https:evil.example",
    "https:/evil.example",
    "https:///evil.example",
    "https://good.example\\@evil.example/",
    "http://[evil",
    "http://evil.example:99999/",
    "http://evil example/",
    " /orders/1",
    "/orders/1 ",
    "\t/orders/1",
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "orders/1",
]


class Raw:
    """One TCP connection to the server, written and read byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> bool:
        """False once the server has closed or reset the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def read_all(self, within: float = 5.0) -> bytes:
        """Everything until the server closes (or resets) the connection."""
        data = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(within):
                while chunk := await self.reader.read(65536):
                    data += chunk
        return data

    async def answer(self, within: float = 5.0) -> tuple[int | None, dict | None, bytes]:
        """The one answer before the server closes: (status, JSON body, raw
        bytes); no status when it closed without answering."""
        data = await self.read_all(within)
        if not data.startswith(b"HTTP/1.1 "):
            return None, None, data
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, orjson.loads(body) if body else None, data

    async def closed(self, within: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF or reset) within `within`."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


class Connections:
    """Raw connections to a server on `port`, all closed at the end of the block."""

    def __init__(self, port: int):
        self.port = port
        self.opened: list[Raw] = []

    async def open(self, source: str = "127.0.0.1") -> Raw:
        """A connection from `source` (a loopback address)."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0), limit=2**20
        )
        self.opened.append(Raw(reader, writer))
        return self.opened[-1]

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for raw in self.opened:
            raw.close()
        for raw in self.opened:
            with contextlib.suppress(ConnectionError):
                await raw.writer.wait_closed()


def request(path: str = "/healthz", **headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Bystander:
    """Another user's requests for as long as an attack runs (tests/bystander.py,
    in a process of its own): their statuses and latencies."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    @classmethod
    async def start(cls, base_url: str, headers: dict[str, str]) -> Bystander:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.bystander",
            base_url,
            headers["Authorization"],
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def stop(self) -> None:
        """Stop it and collect what it measured."""
        out, _ = await self.process.communicate(b"")
        result = orjson.loads(out)
        self.statuses.update({int(k): v for k, v in result["statuses"].items()})
        self.failures, self.latencies = result["failures"], result["latencies"]

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0.0

    def summary(self) -> str:
        return (
            f"another user's {len(self.latencies)} requests: {dict(self.statuses)}, "
            f"{len(self.failures)} failed, p99 {self.p99_ms():.0f} ms"
        )


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def rss_mib(pid: int) -> float:
    """A process's resident memory now."""
    return _status_mib(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of a process's resident memory."""
    return _status_mib(pid, "VmHWM")
