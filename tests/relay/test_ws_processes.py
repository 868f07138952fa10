"""Real processes: two `citelink serve` on one database, their logs, their
shutdown, and the `citelink listen` client."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from citelink.identity import tokens
from tests.support.data import SECRET_KEY, publish, subscribe, unread_counts
from tests.support.processes import citelink_serve
from tests.support.wsclient import messages, open_socket, serving


async def test_two_processes_each_deliver_to_their_own_sockets(conn, db_url, tmp_path, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    async with (
        citelink_serve(db_url, tmp_path / "a") as a,
        citelink_serve(db_url, tmp_path / "b") as b,
        open_socket(a.server, alice.token) as alice_a,
        open_socket(b.server, alice.token) as alice_b,
        open_socket(b.server, bob.token) as bob_b,
    ):
        await publish(conn, news, "to both processes")
        for ws in (alice_a, alice_b, bob_b):
            assert messages(await ws.recv_until("counts")) == ["to both processes"]
        item = await conn.fetchval("SELECT id FROM user_notification WHERE user_id = $1", alice.id)
        # A change made through one process reaches the user's sockets on the other.
        await alice_a.send(type="read", id=item)
        for ws in (alice_a, alice_b):
            assert await ws.recv() == {"type": "read", "id": item}
            assert await ws.recv() == unread_counts(0)
        assert await bob_b.request("ping") == {"type": "pong"}
        # One LISTEN connection per process, whatever the number of sockets.
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        assert listening == 2


async def test_serve_keeps_tokens_out_of_its_logs_and_says_goodbye_with_1001(
    conn, db_url, tmp_path, make_user
):
    alice = await make_user("alice")
    async with citelink_serve(db_url, tmp_path) as serve:
        async with open_socket(serve.server, alice.token) as ws:
            assert await ws.request("ping") == {"type": "pong"}
            reader, writer = await asyncio.open_connection("127.0.0.1", serve.server.port)
            writer.write(f"GET /readyz?token={alice.token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()
            serve.process.send_signal(signal.SIGTERM)
            assert await ws.close_code(within=10) == 1001
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert await asyncio.wait_for(serve.process.wait(), 15) in (0, -signal.SIGTERM)
    log = serve.output.decode()
    assert "Application shutdown complete" in log
    assert '"WebSocket /ws/notifications/?token=[redacted]" [accepted]' in log
    assert "GET /readyz?token=[redacted] HTTP/1.1" in log
    assert alice.token not in log
    assert alice.token.split(".")[2] not in log


async def line_of(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(10):
        return (await stream.readline()).decode().rstrip("\n")


@asynccontextmanager
async def citelink_listen(*args: str, stdin: bytes = b"") -> AsyncIterator:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "citelink.cli",
        "listen",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin
    process.stdin.write(stdin)
    process.stdin.close()
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@pytest.mark.parametrize("sign_in", ["token", "password"])
async def test_listen_prints_live_events_as_json_lines(settings, conn, make_user, sign_in):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await publish(conn, news, "old")
    newest = await conn.fetchval("SELECT max(id) FROM user_notification")
    if sign_in == "token":
        args, stdin = ["--token", alice.token], b""
    else:
        args, stdin = ["--username", "alice"], f"{alice.password}\n".encode()
    async with serving(settings) as server:
        port = server.port
        async with citelink_listen("--url", server.http, *args, stdin=stdin) as listen:
            assert listen.stdout and listen.stderr
            assert await line_of(listen.stderr) == (
                f"citelink listen: connected, newest item {newest}"
            )
            await publish(conn, news, "hello")
            push = orjson.loads(await line_of(listen.stdout))
            assert (push["type"], push["message"]) == ("notification", "hello")
            assert orjson.loads(await line_of(listen.stdout)) == unread_counts(2)

            # The server goes away; what is published meanwhile is replayed after.
            await server.stop()
            assert await line_of(listen.stderr) == (
                "citelink listen: connection closed (1001); reconnecting"
            )
            await publish(conn, news, "while away")
            async with serving(settings, port=port):
                while "resuming after" not in (line := await line_of(listen.stderr)):
                    assert "retrying" in line
                assert line == f"citelink listen: connected, resuming after {push['id']}"
                replayed = orjson.loads(await line_of(listen.stdout))
                assert (replayed["type"], replayed["message"]) == ("notification", "while away")
                assert orjson.loads(await line_of(listen.stdout)) == {
                    "type": "resumed",
                    "count": 1,
                    "last_id": replayed["id"],
                }


async def test_listen_with_a_bad_token_stops(server, make_user):
    alice = await make_user("alice")
    expired = tokens.issue(SECRET_KEY, alice.id, "access", -1)
    async with citelink_listen("--url", server.http, "--token", expired) as listen:
        assert await asyncio.wait_for(listen.wait(), 10) == 1
        assert listen.stderr
        assert (await listen.stderr.read()).decode() == (
            "citelink listen: closed (4401): the token is invalid or expired\n"
        )


@pytest.mark.parametrize("sign_in", ["token", "password"])
async def test_listen_for_a_deactivated_user_says_so(server, conn, make_user, sign_in):
    alice = await make_user("alice")
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", alice.id)
    if sign_in == "token":
        args, stdin = ["--token", alice.token], b""
        expected = "citelink listen: closed (4401): the user is deactivated or deleted\n"
    else:
        args, stdin = ["--username", "alice"], f"{alice.password}\n".encode()
        expected = "citelink listen: sign-in refused: this account is deactivated\n"
    async with citelink_listen("--url", server.http, *args, stdin=stdin) as listen:
        assert await asyncio.wait_for(listen.wait(), 10) == 1
        assert listen.stderr
        assert (await listen.stderr.read()).decode() == expected


@pytest.mark.parametrize("sign_in", ["token", "password"])
async def test_listen_gives_up_on_a_server_it_cannot_reach(make_user, sign_in):
    alice = await make_user("alice")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    if sign_in == "token":
        args, stdin = ["--token", alice.token], b""
    else:
        args, stdin = ["--username", "alice"], f"{alice.password}\n".encode()
    async with citelink_listen("--url", url, "--retries", "2", *args, stdin=stdin) as listen:
        assert await asyncio.wait_for(listen.wait(), 10) == 1
        assert listen.stderr
        lines = (await listen.stderr.read()).decode().splitlines()
    # The same with a token and with a password: two retries, then a clear stop.
    assert [line.endswith("; retrying") for line in lines] == [True, True, False]
    assert lines[-1].startswith(f"citelink listen: cannot reach {url} (")
    assert lines[-1].endswith("tried 3 times; is the server running there? (--url)")


async def test_listen_takes_a_url_without_a_scheme(server, make_user):
    alice = await make_user("alice")
    url = f"127.0.0.1:{server.port}"
    async with citelink_listen("--url", url, "--token", alice.token) as listen:
        assert listen.stderr
        assert await line_of(listen.stderr) == "citelink listen: connected, newest item 0"


async def test_json_logs_carry_request_ids_and_never_a_token(conn, db_url, tmp_path, make_user):
    alice = await make_user("alice")
    async with citelink_serve(db_url, tmp_path, log_format="json") as serve:
        async with httpx.AsyncClient(base_url=serve.server.http) as http:
            given = await http.get("/healthz", headers={"X-Request-ID": "from-the-proxy-1"})
            made = await http.get(f"/readyz?token={alice.token}")
        async with open_socket(serve.server, alice.token) as ws:
            assert await ws.request("ping") == {"type": "pong"}
    assert given.headers["x-request-id"] == "from-the-proxy-1"
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 16
    log = serve.output.decode()
    lines = [orjson.loads(line) for line in log.splitlines()]  # every line is JSON
    by_path = {line.get("path"): line for line in lines if line["logger"] == "uvicorn.access"}
    assert by_path["/healthz"]["request_id"] == "from-the-proxy-1"
    assert by_path["/healthz"]["status"] == 200
    assert by_path["/readyz?token=[redacted]"]["request_id"] == made_id
    accepted = [line for line in lines if "[accepted]" in line["message"]]
    assert accepted and accepted[0]["request_id"] not in (made_id, "from-the-proxy-1")
    assert "token=[redacted]" in accepted[0]["message"]
    assert any(line["message"].startswith("serving on http://") for line in lines)
    assert alice.token.split(".")[2] not in log


async def test_listen_takes_the_sockets_own_url(server, make_user):
    alice = await make_user("alice")
    url = f"{server.ws}/ws/notifications/"  # as the README gives it for sockets
    async with citelink_listen("--url", url, "--token", alice.token) as listen:
        assert listen.stderr
        assert await line_of(listen.stderr) == "citelink listen: connected, newest item 0"


async def test_listen_stops_at_once_when_the_socket_is_refused(server, make_user):
    """A 403 (no socket at that path) is not worth retrying for 30 s."""
    alice = await make_user("alice")
    url = f"{server.http}/elsewhere"
    async with citelink_listen("--url", url, "--token", alice.token) as listen:
        assert await asyncio.wait_for(listen.wait(), 5) == 1
        assert listen.stderr
        assert (await listen.stderr.read()).decode() == (
            f"citelink listen: {url}/ws/notifications/ refused the socket (HTTP 403); "
            "--url is the server's address, http(s)://host:port\n"
        )
