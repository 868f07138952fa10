"""Faults: connected clients miss nothing and get nothing twice when the
database connections die, when PostgreSQL restarts or stops answering, and a
slow client is cut off without slowing anyone else."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from citelink.db.connection import connect
from citelink.identity import tokens
from citelink.relay.listener import BACKOFF_CAP, Listener, backoff
from citelink.server.logs import log_config
from tests.support.data import SECRET_KEY, publish, subscribe, unread_counts
from tests.support.database import pg_ctl, start_postgres
from tests.support.proxy import FreezableProxy
from tests.support.waiting import wait_until
from tests.support.wsclient import StalledSocket, logged, messages, open_socket, serving

OTHERS = (
    "FROM pg_stat_activity WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), $1)"
)
TERMINATE_OTHERS = f"SELECT count(pg_terminate_backend(pid)) {OTHERS}"
APP_CONNECTIONS = f"SELECT count(*) {OTHERS}"


async def app_connections(conn, publisher) -> bool:
    """Whether the app holds its listener and a pool connection (or more)."""
    return await conn.fetchval(APP_CONNECTIONS, publisher.get_server_pid()) >= 2


async def test_terminating_every_app_connection_while_publishing(
    settings, conn, db_url, make_user, caplog
):
    caplog.set_level(logging.INFO, logger="citelink")
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    publisher = await connect(db_url)
    expected = [f"m{i}" for i in range(60)]
    try:
        async with (
            serving(settings, listener_probe_seconds=0.5) as server,
            open_socket(server, alice.token) as tab1,
            open_socket(server, alice.token) as tab2,
            open_socket(server, bob.token) as other,
        ):
            for i, message in enumerate(expected):
                await publish(publisher, news, message)
                if i in (20, 40):
                    # The listener and every pool connection of the app, at once,
                    # once both are there (the pool reconnects on its next use).
                    await wait_until(lambda: app_connections(conn, publisher), within=10)
                    killed = await conn.fetchval(TERMINATE_OTHERS, publisher.get_server_pid())
                    assert killed >= 1
                if i == 21:
                    # A change while the listener is (probably) down.
                    await publisher.execute(
                        "UPDATE user_notification SET is_read = true WHERE id = "
                        "(SELECT min(id) FROM user_notification WHERE user_id = $1)",
                        alice.id,
                    )
            await publish(publisher, news, "marker")
            first = await conn.fetchval(
                "SELECT min(id) FROM user_notification WHERE user_id = $1", alice.id
            )
            for ws in (tab1, tab2, other):
                frames = await ws.until_message("marker")
                assert messages(frames) == [*expected, "marker"]
                reads = [f for f in frames if f["type"] == "read"]
                assert reads == ([{"type": "read", "id": first}] if ws is not other else [])
            for tab in (tab1, tab2):
                assert await tab.request("counts") == unread_counts(60)
    finally:
        await publisher.close()
    assert "back-filling" in caplog.text


async def ready(client: httpx.AsyncClient, status: int) -> dict:
    """Poll /readyz until it answers `status` (each poll is a round trip)."""
    while (response := await client.get("/readyz")).status_code != status:
        pass
    return response.json()


async def test_postgres_restart(settings, own_postgres):
    """The server stops and starts again. The app reaches it through a proxy that
    stays frozen a little longer, so that items are surely committed before the
    app listens again: they reach the open sockets by back-fill, once."""
    url, pgdata = own_postgres
    conn = await connect(url)
    try:
        alice = await conn.fetchval(
            "INSERT INTO users (username, password_hash) VALUES ('alice', 'x') RETURNING id"
        )
        news = await subscribe(conn, alice, "news")
        sockets = await conn.fetchval("SHOW unix_socket_directories")
    finally:
        await conn.close()
    token = tokens.issue(SECRET_KEY, alice, "access", 5)
    proxy = FreezableProxy(url)
    proxied = await proxy.start()
    try:
        async with (
            serving(settings, database_url=proxied, listener_probe_seconds=0.5) as server,
            httpx.AsyncClient(base_url=server.http) as client,
            open_socket(server, token) as tab1,
            open_socket(server, token) as tab2,
        ):
            conn = await connect(url)
            await publish(conn, news, "before")
            await conn.close()
            for tab in (tab1, tab2):
                assert messages(await tab.recv_until("counts")) == ["before"]

            await asyncio.to_thread(pg_ctl, pgdata, "-m", "fast", "stop")
            try:
                assert await ready(client, 503) == {
                    "status": "unavailable",
                    "database": False,
                    "listener": False,
                }
                # The sockets stay open; what needs the database says so.
                answer = await tab1.request("counts")
                assert answer["type"] == "error" and answer["code"] == "unavailable"
            finally:
                proxy.freeze()
                await asyncio.to_thread(start_postgres, pgdata, sockets)
            publisher = await connect(url)
            try:
                for i in range(5):
                    await publish(publisher, news, f"after {i}")
            finally:
                await publisher.close()
            proxy.thaw()
            for tab in (tab1, tab2):
                frames = await tab.until_message("after 4")
                assert messages(frames) == [f"after {i}" for i in range(5)]
            assert (await ready(client, 200))["listener"] is True
            for tab in (tab1, tab2):
                await tab.send(type="ping")
                assert messages(await tab.recv_until("pong")) == []
    finally:
        await proxy.stop()


async def test_probe_finds_a_listener_that_silently_stopped_hearing(
    settings, conn, db_url, make_user, caplog
):
    """A half-open connection (the network drops packets): no termination
    callback fires, only the NOTIFY probe notices."""
    caplog.set_level(logging.INFO, logger="citelink")
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    try:
        async with (
            serving(settings, database_url=proxied, listener_probe_seconds=0.3) as server,
            open_socket(server, alice.token) as ws,
        ):
            await publish(conn, news, "one")
            assert messages(await ws.recv_until("counts")) == ["one"]
            with logged("citelink.relay.listener", "listener probe got no answer") as noticed:
                proxy.freeze()
                await publish(conn, news, "two")  # its event is stuck in the frozen link
                await asyncio.wait_for(noticed.wait(), 5)
            proxy.thaw()
            await publish(conn, news, "three")
            frames = await ws.until_message("three")
            assert messages(frames) == ["two", "three"]
    finally:
        await proxy.stop()
    assert "back-filling 1 user(s)" in caplog.text


async def test_slow_client_is_closed_with_4408_while_a_fast_one_keeps_up(settings, conn, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    published = 48  # 12 MB: more than the kernel buffers of one connection hold
    async with serving(settings, ws_send_queue=4) as server:
        slow = await StalledSocket.open(server, bob.token)
        async with open_socket(server, alice.token) as fast:
            # 256 KB in 64,000 characters (a message is at most 100,000 of them).
            padding = "\U0001f600" * 64_000
            for i in range(published):
                await publish(conn, news, f"{i} {padding}")
                frames = await fast.recv_until("counts", within=2)
                assert [m.split()[0] for m in messages(frames)] == [str(i)]
            # Bob finally reads: what was already on its way, then the close.
            assert await slow.close_code() == 4408
            assert slow.protocol.close_rcvd.reason == "too slow: send queue full"
            received = [int(m.split()[0]) for m in messages(slow.frames)]
            assert received == list(range(len(received)))
            assert len(received) < published
            assert await fast.request("ping") == {"type": "pong"}


async def test_shutdown_closes_sockets_with_1001(settings, make_user):
    alice = await make_user("alice")
    async with serving(settings) as server, open_socket(server, alice.token) as ws:
        assert await ws.request("ping") == {"type": "pong"}
        await server.stop()
        assert await ws.close_code() == 1001
        assert ws.connection.close_reason == "server shutting down"


async def test_socket_opened_while_the_database_is_unreachable_gets_1013(
    settings, db_url, make_user
):
    alice = await make_user("alice")
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    try:
        async with serving(settings, database_url=proxied, listener_probe_seconds=0.5) as server:
            await proxy.stop()  # nothing answers there any more
            async with open_socket(server, alice.token) as ws:
                assert await ws.close_code(within=5) == 1013
    finally:
        await proxy.stop()


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_listener_notices_a_broken_link_within_the_bound_and_recovers(
    settings, conn, db_url, make_user, fault, figure
):
    """Through a proxy that cuts every connection (drop: the termination
    callback fires at once) or stops passing bytes (stall: only the probe can
    tell, within two probe intervals). An item committed meanwhile arrives by
    back-fill once the link is back."""
    probe = 0.5
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    clock = asyncio.get_running_loop().time
    try:
        async with (
            serving(settings, database_url=proxied, listener_probe_seconds=probe) as server,
            httpx.AsyncClient(base_url=server.http) as client,
            open_socket(server, alice.token) as ws,
        ):
            await ready(client, 200)
            sign = "listener connection lost" if fault == "drop" else "listener probe got no answer"
            with logged("citelink.relay.listener", sign) as noticed:
                started = clock()
                proxy.cut() if fault == "drop" else proxy.freeze()
                await publish(conn, news, "meanwhile")
                await asyncio.wait_for(noticed.wait(), 2 * probe + 1)
                detected = clock() - started
            proxy.restore() if fault == "drop" else proxy.thaw()
            back = clock()
            assert messages(await ws.recv_until("counts")) == ["meanwhile"]
            await ready(client, 200)
            recovered = clock() - back
    finally:
        await proxy.stop()
    assert detected <= (1 if fault == "drop" else 2 * probe + 0.5)
    figure(
        f"{fault}: noticed after {detected * 1000:.0f} ms (probe every {probe} s), "
        f"listening and back-filled {recovered * 1000:.0f} ms after the link came back"
    )


def test_the_listener_waits_within_the_cap_however_many_attempts_failed():
    """A database away for hours: the 1,024th attempt's wait overflowed a float,
    which ended the listener for good."""
    for attempt in (0, 1, 6, 1023, 1024, 100_000):
        assert 0 < backoff(attempt) <= BACKOFF_CAP


async def test_a_database_that_stays_away_is_one_warning(monkeypatch, caplog):
    """Retries are told at debug level, with their tracebacks (`--debug`)."""
    caplog.set_level(logging.DEBUG, logger="citelink.relay.listener")
    listener = Listener("postgresql://nobody@127.0.0.1:1/none")
    await listener.start(hub=None, wait=1.0)  # type: ignore[arg-type]  # never connects
    await listener.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "database unavailable (connection refused); retrying until it is back",
        "not listening yet; retrying in the background",
    ]
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(retries) >= 3 and all(r.exc_info for r in retries)
    assert log_config()["loggers"]["citelink"]["level"] == "INFO"
    monkeypatch.setenv("CITELINK_DEBUG", "1")
    assert log_config()["loggers"]["citelink"]["level"] == "DEBUG"
