"""Which database citelink uses, and how the app talks to it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from citelink.db import decoding, embedded
from citelink.db.queries import Q
from citelink.problems import Problem
from citelink.settings import Settings

SECRET_KEY_FILE = "secret_key"

# What statements run on: a connection of its own (`connect`) or one the pool
# lends (a proxy of one); and either of those or the pool itself.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
Queryable: TypeAlias = Connection | asyncpg.Pool


def resolve(settings: Settings) -> Settings:
    """Fill in the database URL and the secret key.

    Without CITELINK_DATABASE_URL the embedded server is started in the data
    directory, and a secret key is generated once and kept there (mode 0600).
    With a URL the secret key must be given: several app processes share one
    database and must sign tokens alike.
    """
    check(settings)
    url, key = settings.database_url, settings.secret_key
    if url is None:
        url = embedded.start(settings.data_dir)
        key = key or _stored_secret_key(settings)
    return dataclasses.replace(settings, database_url=url, secret_key=key)


def check(settings: Settings) -> None:
    """Refuse database settings that cannot work, before anything is started."""
    if settings.database_url is None:
        embedded.library()  # installed?
    elif settings.secret_key is None:
        raise Problem(
            "CITELINK_SECRET_KEY is required with CITELINK_DATABASE_URL "
            "(every process behind one database must sign tokens with the same key)"
        )


def _stored_secret_key(settings: Settings) -> str:
    path = settings.data_dir / SECRET_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


# Timestamps are read as text (citelink.db.decoding), so their shape must not
# depend on the server's or the role's defaults.
SERVER_SETTINGS = {"DateStyle": "ISO", "TimeZone": "UTC"}


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            schema="pg_catalog",
            encoder=decoding.encode_json,
            decoder=decoding.decode_json,
        )
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=decoding.encode_timestamp,
        decoder=decoding.decode_timestamp,
    )


async def _warm_up(conn: asyncpg.Connection) -> None:
    """Plan, on a new pooled connection, what its first publish and its first
    inbox write would plan otherwise: PostgreSQL plans a trigger function's
    statements once per connection, at their first call, and a fresh server's
    first fan-outs paid for it. In a transaction rolled back: a scheduled
    notification to the first tag (nothing fanned out, nothing kept or told),
    an update that changes no item, a write of no one's inbox."""
    async with conn.transaction():
        # Never a wait: a table locked elsewhere (a migration, an operator)
        # leaves this connection cold instead of holding up its first request.
        await conn.execute("SET LOCAL lock_timeout = '50ms'; SET LOCAL statement_timeout = '2s'")
        tag = await conn.fetchval("SELECT min(id) FROM tag")
        if tag is not None:
            await conn.fetch(
                Q.publish, tag, None, "warm-up", {}, None, None, None, "infinity", None, None
            )
        await conn.execute("SELECT citelink_fan_out('{}')")
        await conn.execute("UPDATE user_notification SET is_seen = is_seen WHERE false")
        await conn.fetchval(Q.inbox_set_state, 0, 0, True, None, None)
        raise _RolledBack


class _RolledBack(Exception):
    """Ends the warm-up's transaction."""


async def _init_pooled(conn: asyncpg.Connection) -> None:
    await _init_connection(conn)
    # Only ever faster: a database the warm-up does not suit is served cold.
    with contextlib.suppress(_RolledBack, asyncpg.PostgresError):
        await _warm_up(conn)


async def warm(pool: asyncpg.Pool, connections: int) -> None:
    """Open (and warm up) `connections` of the pool before anyone needs them."""
    held = [await pool.acquire() for _ in range(connections)]
    for conn in held:
        await pool.release(conn)


# The longest one statement of the work at hand may run, in seconds: set per
# request class (a user's own reads and writes, bulk actions, staff work) by
# whoever starts the work (citelink.api.endpoint, citelink.relay.session);
# None: the pool's command timeout (CITELINK_DB_QUERY_SECONDS).
statement_seconds: ContextVar[float | None] = ContextVar("statement_seconds", default=None)


class _Connection(asyncpg.Connection):
    """asyncpg's connection, whose statements without a timeout of their own
    get the one of the work they are part of (`statement_seconds`); asyncpg
    cancels a statement on the server when it runs out."""

    # asyncpg's own method (fetch, fetchrow, fetchval and execute with arguments
    # call it), with its signature.
    async def _execute(self, query, args, limit, *rest, **options):  # type: ignore[no-untyped-def]
        timeout, *more = rest  # asyncpg's positional `timeout`
        if timeout is None:
            timeout = statement_seconds.get()
        return await super()._execute(  # type: ignore[misc]  # private: not in the stubs
            query, args, limit, timeout, *more, **options
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is. asyncpg's default reset (RESET
    ALL, UNLISTEN *, ...) is one more round trip per query, and the app keeps no
    session state on pooled connections: the actor is set per transaction and
    LISTEN has a connection of its own. An open transaction is still rolled back."""


async def connect(url: str) -> asyncpg.Connection:
    """One connection with citelink's codecs (citelink.db.decoding)."""
    conn = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    await _init_connection(conn)
    return conn


# The largest bigint: ids, positions and counts the database can hold.
BIGINT_MAX = 2**63 - 1

# The database is down, restarting, unreachable or too slow: what the API
# answers with 503 (never a 500, never a hang: every wait below is bounded).
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # the connection died
    asyncpg.OperatorInterventionError,  # shutting down, starting up, statement cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    # A pooled connection whose server process was terminated while it sat
    # idle can fail its next statement this way ("another operation is in
    # progress") before asyncpg notices it is gone.
    asyncpg.InternalClientError,
    # A write that kept meeting an item lock held by a plain SQL writer
    # (citelink.db.inbox_store): busy, try again.
    asyncpg.LockNotAvailableError,
)
# Anything a statement may fail with, the database's own errors included:
# what the relay and the socket's frames recover from.
ERRORS = (*UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError)


# The connection died under a statement (its server process terminated, the
# link cut): a read may be run again on another connection. A write may not,
# unless asyncpg refused to send it (InternalClientError: the connection was
# already broken), as it may have committed before the answer was lost.
CONNECTION_LOST = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.InternalClientError,
)


def _dropped_by_server(conn: Connection) -> bool:
    """Whether the server has dropped an idle connection that asyncpg has not
    noticed yet. An idle connection has nothing to read: bytes waiting (what
    a terminated server process sends as it exits) or the end of the stream
    mean it is gone. One poll(2), no round trip."""
    # asyncpg gives no other way to its socket (a pool's proxy passes it on).
    transport = conn._transport  # type: ignore[union-attr]  # private, not in the stubs
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _BoundedPool(asyncpg.Pool):
    """asyncpg's pool, except that waiting for a connection is bounded even
    where the caller gives no timeout (`pool.fetch(...)` and the like), and
    that a connection the server dropped while it sat in the pool (a restart,
    a failover, pg_terminate_backend) is replaced before a statement is sent
    on it, instead of failing that statement."""

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    # asyncpg's own method (PoolAcquireContext and Pool.acquire call it).
    async def _acquire(self, timeout: float | None) -> PoolConnectionProxy:  # noqa: ASYNC109
        acquire = super()._acquire  # type: ignore[misc]  # private: not in asyncpg's stubs
        for _ in range(self.get_max_size()):
            conn: PoolConnectionProxy = await acquire(timeout)
            if not _dropped_by_server(conn):
                return conn
            conn.terminate()
            await self.release(conn)
        # Every connection was dropped: the next one is a new one.
        conn = await acquire(timeout)
        return conn


async def create_pool(
    url: str, size: int, *, connect_seconds: float = 5.0, query_seconds: float = 60.0
) -> asyncpg.Pool:
    """The app's pool. Connecting and waiting for a free connection take at most
    `connect_seconds`, one statement at most `query_seconds` (TimeoutError)."""
    # asyncpg.create_pool's own arguments; it has no way to choose the pool class.
    # min_size=0: with a floor, asyncpg reconnects it in the background while the
    # database is down and logs a traceback each try; a statement connects anyway.
    pool = _BoundedPool(
        url,
        min_size=0,
        max_size=size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_pooled,
        reset=_keep_session,
        loop=None,
        connection_class=_Connection,
        record_class=asyncpg.Record,
        timeout=connect_seconds,
        command_timeout=query_seconds,
        server_settings=SERVER_SETTINGS,
    )
    pool.acquire_timeout = connect_seconds
    return await pool


@asynccontextmanager
async def transaction(
    pool: asyncpg.Pool, actor_id: int | None, api_key_id: int | None = None
) -> AsyncIterator[PoolConnectionProxy]:
    """A transaction whose writes are audited as made by `actor_id` (a user)
    or with `api_key_id` (an API key)."""
    async with pool.acquire() as conn, conn.transaction():
        if actor_id is not None:
            await conn.execute("SELECT set_config('citelink.actor_id', $1, true)", str(actor_id))
        if api_key_id is not None:
            await conn.execute(
                "SELECT set_config('citelink.api_key_id', $1, true)", str(api_key_id)
            )
        yield conn
