"""uvicorn's HTTP and WebSocket protocols, with the limits uvicorn lacks.

uvicorn reads a request head for as long as the client sends it, lets a
connection that sends nothing stay open forever and accepts every connection
the kernel hands it. `GuardedHttpProtocol` adds, per connection:

- a request head (request line and headers) of at most `http_max_header_bytes`
  in at most `http_max_headers` header lines: past either, 431 and closed;
- a deadline for each head, `http_header_seconds` from the connection opening
  or from the previous answer: past it, 408 and closed when part of a head
  came (slowloris), closed silently when nothing did (an idle connection);
- keep-alive: an idle connection is closed after `http_keepalive_seconds`
  (uvicorn's own timer), and the `http_keepalive_requests`-th request of a
  connection is answered with `Connection: close`.

and per process (`ConnectionGuard`, HTTP and WebSocket connections alike):

- at most `max_connections_per_client` connections per client address; past
  it, a new connection is closed at once. Trusted proxies
  (`--forwarded-allow-ips`) are exempt: their connections carry many clients,
  and the proxy limits those (deploy/nginx/);
- at most `max_connections` in all; past it, the connection that has waited
  longest for a request head makes room for the new one, or, when none is
  waiting, the new one is closed at once.

These answers are written by the protocol, before any request reaches the
app, in the app's error shape (`{"detail": ...}`).

`GuardedWebSocketProtocol` keeps its connection's place in the counts after
the upgrade, and tells the app at once when a keepalive ping goes unanswered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from citelink.errors import error_body
from citelink.responses import dumps
from citelink.settings import Settings

log = logging.getLogger("citelink.server.connection_guards")

# Open files kept for what is not a client connection: the listener, log
# files, the embedded server's sockets (the database pool is counted apart).
RESERVED_FILES = 64
# How often reaching the connection cap is logged, at most.
CAP_WARNING_SECONDS = 10.0
# How long a refused connection's further bytes are read and dropped, so that
# its client reads the answer before the connection goes.
LINGER_SECONDS = 2.0


def connection_cap(settings: Settings) -> int:
    """`max_connections`, or when it is 0 as many as the open-file limit leaves
    room for beside the database pool and RESERVED_FILES."""
    if settings.max_connections:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 2**20
    return max(1, soft - settings.pool_size - RESERVED_FILES)


def trusted_hosts(allowed: str | list[str]) -> Callable[[str | None], bool]:
    """Whether an address is one of `allowed` (uvicorn's --forwarded-allow-ips:
    addresses and networks, comma-separated, or "*")."""
    items = [a.strip() for a in allowed.split(",")] if isinstance(allowed, str) else allowed
    if "*" in items:
        return lambda host: True
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue  # uvicorn takes names too; a socket's peer is never one

    def trusted(host: str | None) -> bool:
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in networks)

    return trusted


@dataclass(eq=False)
class Slot:
    """A connection's place in the counts, released once."""

    guard: ConnectionGuard
    host: str | None
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.guard.release(self)


class ConnectionGuard:
    """The connections of one server: how many, how many per client address,
    and which are waiting for a request head (oldest first)."""

    def __init__(self, cap: int, per_client: int, trusted: Callable[[str | None], bool]):
        self.cap = cap
        self.per_client = per_client
        self.trusted = trusted
        self.open = 0
        self.by_client: dict[str, int] = {}
        # Insertion-ordered: the first is the one that has waited longest.
        self.waiting: dict[GuardedHttpProtocol, None] = {}
        self._warned = 0.0

    def admit(self, host: str | None) -> Slot | None:
        """A slot for a new connection from `host`, or None to close it."""
        # The address whose connections are counted (None: not counted).
        counted = host if host is not None and not self.trusted(host) else None
        if counted is not None and self.by_client.get(counted, 0) >= self.per_client:
            self._warn(f"client {host} holds {self.per_client} connections already")
            return None
        if self.open >= self.cap:
            if not self.waiting:
                self._warn(f"{self.open} connections open, all busy")
                return None
            oldest = next(iter(self.waiting))
            oldest.make_room()
        self.open += 1
        if counted is not None:
            self.by_client[counted] = self.by_client.get(counted, 0) + 1
        return Slot(self, counted)

    def release(self, slot: Slot) -> None:
        self.open -= 1
        if slot.host is not None:
            left = self.by_client[slot.host] - 1
            if left:
                self.by_client[slot.host] = left
            else:
                del self.by_client[slot.host]

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._warned >= CAP_WARNING_SECONDS:
            self._warned = now
            log.warning("refusing new connections: %s", why)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        settings: Settings,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.settings = settings
        self.guard = guard
        self.slot: Slot | None = None
        # Reading a request head: what came of it so far.
        self.in_head = True
        self.head_bytes = 0
        self.head_lines = 0
        self.head_started = False
        # Armed while the connection waits for a request head.
        self.deadline: asyncio.TimerHandle | None = None
        self.requests = 0
        self.refused = False

    # Connection -------------------------------------------------------------

    # As uvicorn's own: asyncio.Protocol says BaseTransport, a connection is a Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.slot = self.guard.admit(self.client[0] if self.client else None)
        if self.slot is None:
            self.refused = True
            transport.close()
            return
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self.slot is not None:
            self.slot.release()
        super().connection_lost(exc)

    def make_room(self) -> None:
        """Closed to let a new connection in (at the cap, waiting the longest)."""
        self._stop_waiting()
        if self.slot is not None:
            self.slot.release()
        self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The socket takes this connection's place in the counts.
        socket = self.transport.get_protocol()
        if isinstance(socket, GuardedWebSocketProtocol):
            socket.slot, self.slot = self.slot, None

    # Request heads ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.in_head:
            self.head_bytes += len(data)
            self.head_started = True
        super().data_received(data)
        # Checked after parsing: a chunk may end a head and carry a body.
        if self.in_head and not self.refused:
            if self.head_bytes > self.settings.http_max_header_bytes:
                limit = self.settings.http_max_header_bytes
                self._refuse(431, f"request head larger than {limit} bytes")
            else:
                self._check_lines()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The rest of this chunk goes uncounted: the limit holds to one read.
        self.in_head = self.head_started = True
        self.head_bytes = self.head_lines = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_lines += 1
        if self.head_lines <= self.settings.http_max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_started = False
        self._stop_waiting()
        if self._check_lines():
            return
        previous = self.cycle
        super().on_headers_complete()
        self.requests += 1
        if self.cycle is not previous and self.requests >= self.settings.http_keepalive_requests:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer when it waits for another request.
        if self.timeout_keep_alive_task is not None:
            self._wait_for_head()

    def _check_lines(self) -> bool:
        """Refuse a head with too many header lines; True if refused."""
        if self.head_lines > self.settings.http_max_headers:
            self._refuse(431, f"more than {self.settings.http_max_headers} request headers")
        return self.refused

    def _wait_for_head(self) -> None:
        self._stop_waiting()
        self.deadline = self.loop.call_later(self.settings.http_header_seconds, self._too_late)
        self.guard.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.guard.waiting.pop(self, None)

    def _too_late(self) -> None:
        self.deadline = None
        self.guard.waiting.pop(self, None)
        if self.head_started:
            self._refuse(408, "request head not received in time")
        else:
            self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON `detail` and close, before any app sees it."""
        self.refused = True
        self._stop_waiting()
        body = dumps(error_body(detail))
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            # Closing with the client's bytes unread would reset the connection,
            # and the client might never read the answer: half-close instead,
            # drop what still comes (data_received), and close when the client
            # does (uvicorn's eof_received) or the time is up.
            self.transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(LINGER_SECONDS, self.transport.abort)
        else:
            self.transport.close()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, holding its connection's slot, and telling
    the app at once when the client stops answering keepalive pings."""

    slot: Slot | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.slot is not None:
            self.slot.release()

    def keepalive_timeout(self) -> None:
        failing = not self.close_sent and not self.transport.is_closing()
        super().keepalive_timeout()
        if failing:
            # uvicorn has sent the close frame (1011) but tells the app nothing
            # until the transport is gone, which waits for the frames buffered
            # to be read: a send meanwhile raised "Unexpected ASGI message
            # 'websocket.send', after sending 'websocket.close'", and a sender
            # waiting for room waited as long as the client kept its window
            # shut. The client is gone for the app from now on, and its
            # connection within close_timeout.
            self.disconnected = True
            self.writable.set()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1011})
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
