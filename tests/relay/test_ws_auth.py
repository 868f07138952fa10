"""Who may open a socket, and for how long: the 4401 close and the `auth` frame."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import jwt  # noqa: F401  (its warning class is named below)
import pytest
import websockets

from citelink.identity import tokens
from tests.support.data import SECRET_KEY, unread_counts
from tests.support.proxy import FreezableProxy
from tests.support.world import bad_tokens
from tests.support.wsclient import logged, open_socket, serving


async def expect_refused(server, token: str) -> tuple[int, str]:
    """The handshake succeeds (a browser sees the code), then the server closes."""
    async with open_socket(server, token) as ws:
        code = await ws.close_code()
        return code, ws.connection.close_reason


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda user_id: "", id="missing"),
        pytest.param(lambda user_id: "not-a-jwt", id="garbage"),
        pytest.param(
            lambda user_id: tokens.issue(SECRET_KEY, user_id, "refresh", 60), id="refresh"
        ),
        pytest.param(lambda user_id: tokens.issue(SECRET_KEY, user_id, "access", -1), id="expired"),
        pytest.param(
            lambda user_id: tokens.issue("another-key" * 4, user_id, "access", 60), id="forged"
        ),
    ],
)
async def test_bad_tokens_are_refused_with_4401(server, make_user, make_token):
    alice = await make_user("alice")
    assert await expect_refused(server, make_token(alice.id)) == (
        4401,
        "invalid or expired access token",
    )


async def test_deactivated_or_deleted_user_is_refused(server, conn, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", alice.id)
    await conn.execute("DELETE FROM users WHERE id = $1", bob.id)
    for user in (alice, bob):
        assert await expect_refused(server, user.token) == (4401, "user is inactive or deleted")


async def test_handshake_refusal_would_hide_the_code_so_we_accept_first(server, make_user):
    """What a browser needs: the 101 handshake completes before the 4401 close."""
    alice = await make_user("alice")
    url = f"{server.ws}/ws/notifications/?token=expired"
    async with websockets.connect(url) as connection:
        assert connection.response.status_code == 101
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await connection.recv()
    assert closed.value.rcvd.code == 4401
    assert alice  # a valid user exists; only the token is wrong


async def test_socket_closes_with_4401_when_its_token_expires(server, make_user):
    alice = await make_user("alice")
    short = tokens.issue(SECRET_KEY, alice.id, "access", 2 / 60)
    expires_at = tokens.decode(SECRET_KEY, short, "access")["exp"]
    async with open_socket(server, short) as ws:
        assert await ws.request("ping") == {"type": "pong"}
        assert await ws.close_code(within=4) == 4401
        assert time.time() >= expires_at - 0.05
        assert ws.connection.close_reason == "token expired"


async def test_fresh_auth_frame_keeps_the_socket_open(server, make_user):
    alice = await make_user("alice")
    short = tokens.issue(SECRET_KEY, alice.id, "access", 2 / 60)
    first_expiry = tokens.decode(SECRET_KEY, short, "access")["exp"]
    fresh = tokens.issue(SECRET_KEY, alice.id, "access", 1)
    async with open_socket(server, short) as ws:
        answer = await ws.request("auth", token=fresh)
        expires_at = tokens.decode(SECRET_KEY, fresh, "access")["exp"]
        assert answer == {"type": "auth", "expires_at": expires_at}
        # Past the first token's expiry: still open.
        await asyncio.sleep(first_expiry - time.time() + 0.3)
        assert await ws.request("ping") == {"type": "pong"}


async def test_bad_auth_frames_are_errors_and_change_nothing(server, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    short = tokens.issue(SECRET_KEY, alice.id, "access", 2 / 60)
    async with open_socket(server, short) as ws:
        for token, detail in (
            ("garbage", "the token is invalid or expired"),
            (tokens.issue(SECRET_KEY, alice.id, "refresh", 60), "the token is invalid or expired"),
            (tokens.issue(SECRET_KEY, bob.id, "access", 60), "the token belongs to another user"),
        ):
            answer = await ws.request("auth", token=token)
            assert answer == {"type": "error", "code": "invalid_token", "detail": detail}
        assert await ws.request("auth", token=None) == {
            "type": "error",
            "code": "invalid",
            "detail": "'token' must be a string",
        }
        # The original expiry still applies.
        assert await ws.close_code(within=4) == 4401


async def test_deactivating_or_deleting_a_user_closes_their_open_sockets(server, conn, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    async with (
        open_socket(server, alice.token) as tab1,
        open_socket(server, alice.token) as tab2,
        open_socket(server, bob.token) as other,
        open_socket(server, carol.token) as deleted,
    ):
        await conn.execute("UPDATE users SET is_active = false WHERE id = $1", alice.id)
        await conn.execute("DELETE FROM users WHERE id = $1", carol.id)
        for ws in (tab1, tab2, deleted):
            assert await ws.close_code() == 4401
            assert ws.connection.close_reason == "user is inactive or deleted"
        assert await other.request("ping") == {"type": "pong"}
        # Reactivating or renaming a user, or changing bob, closes nothing.
        await conn.execute("UPDATE users SET is_active = true, is_staff = true")
        assert await other.request("ping") == {"type": "pong"}


async def test_a_deactivation_missed_while_the_listener_was_down_still_closes(
    settings, conn, db_url, make_user
):
    alice = await make_user("alice")
    bob = await make_user("bob")
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    try:
        async with (
            serving(settings, database_url=proxied, listener_probe_seconds=0.3) as server,
            open_socket(server, alice.token) as ws,
            open_socket(server, bob.token) as other,
        ):
            with logged("citelink.relay.listener", "listener probe got no answer") as noticed:
                proxy.freeze()
                # Its `revoke` event is stuck in the frozen link, then lost.
                await conn.execute("UPDATE users SET is_active = false WHERE id = $1", alice.id)
                await asyncio.wait_for(noticed.wait(), 5)
            proxy.thaw()
            assert await ws.close_code() == 4401
            # Bob's socket stays open; its back-fill may send his count first.
            await other.send(type="ping")
            pong = {"type": "pong"}
            assert await other.recv_until("pong") in (
                [pong],
                [unread_counts(0), pong],
            )
    finally:
        await proxy.stop()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_every_bad_token_is_refused_with_4401(server, make_user):
    alice = await make_user("alice")
    refused = {}
    for label, token in bad_tokens(alice.id).items():
        async with open_socket(server, quote(token, safe="")) as ws:
            refused[label] = await ws.close_code()
    assert refused == dict.fromkeys(refused, 4401)
