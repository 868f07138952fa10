"""Revocable tokens: a new password, a deactivation or signing out everywhere
revokes every token of the user (REST and open sockets, 4401); signing out
revokes one sign-in's refresh tokens; refresh tokens rotate, and reusing a
rotated one revokes its sign-in."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import jwt

from citelink.identity import passwords, tokens
from tests.support.data import SECRET_KEY
from tests.support.proxy import FreezableProxy
from tests.support.world import World
from tests.support.wsclient import logged, open_socket, serving

REVOKED = {"detail": "token has been revoked"}


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> dict:
    r = await client.post("/api/token/", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


async def refreshed(client: httpx.AsyncClient, refresh: str) -> httpx.Response:
    return await client.post("/api/token/refresh/", json={"refresh": refresh})


async def me(client: httpx.AsyncClient, access: str) -> httpx.Response:
    return await client.get("/api/users/me/", headers={"Authorization": f"Bearer {access}"})


async def test_refresh_tokens_rotate_and_reuse_revokes_the_sign_in(
    client: httpx.AsyncClient, world: World
):
    first = await sign_in(client, "alice", "secret-pw")
    second = (await refreshed(client, first["refresh"])).json()
    third = (await refreshed(client, second["refresh"])).json()
    assert len({first["refresh"], second["refresh"], third["refresh"]}) == 3
    # Someone replays a used one (a stolen copy, say): refused, and the whole
    # sign-in with it, the newest refresh token included.
    r = await refreshed(client, first["refresh"])
    assert (r.status_code, r.json()) == (
        401,
        {"detail": "refresh token already used: every token of its sign-in is revoked"},
    )
    assert (await refreshed(client, third["refresh"])).json() == REVOKED
    # Another sign-in of the same user is untouched; access tokens live on.
    other = await sign_in(client, "alice", "secret-pw")
    assert (await refreshed(client, other["refresh"])).status_code == 200
    assert (await me(client, third["access"])).status_code == 200


async def test_two_refreshes_with_one_token_at_once_revoke_the_sign_in(
    client: httpx.AsyncClient, world: World
):
    pair = await sign_in(client, "alice", "secret-pw")
    answers = await asyncio.gather(*(refreshed(client, pair["refresh"]) for _ in range(2)))
    assert sorted(r.status_code for r in answers) == [200, 401]
    winner = next(r.json() for r in answers if r.status_code == 200)
    assert (await refreshed(client, winner["refresh"])).json() == REVOKED


async def test_blacklist_revokes_one_sign_in(client: httpx.AsyncClient, world: World):
    kept = await sign_in(client, "alice", "secret-pw")
    pair = await sign_in(client, "alice", "secret-pw")
    r = await client.post("/api/token/blacklist/", json={"refresh": pair["refresh"]})
    assert (r.status_code, r.json()) == (200, {})
    assert (await refreshed(client, pair["refresh"])).json() == REVOKED
    r = await client.post("/api/token/verify/", json={"token": pair["refresh"]})
    assert (r.status_code, r.json()) == (401, REVOKED)
    # Twice: it is revoked already.
    r = await client.post("/api/token/blacklist/", json={"refresh": pair["refresh"]})
    assert (r.status_code, r.json()) == (401, REVOKED)
    # Bad input is a 4xx.
    for body in ({"refresh": pair["access"]}, {"refresh": "junk"}, {}):
        assert (await client.post("/api/token/blacklist/", json=body)).status_code in (401, 422)
    assert (await refreshed(client, kept["refresh"])).status_code == 200


async def everything_of(client: httpx.AsyncClient, pair: dict) -> list[int]:
    """The statuses of using each token of `pair`: REST, refresh, verify."""
    return [
        (await me(client, pair["access"])).status_code,
        (await refreshed(client, pair["refresh"])).status_code,
        (await client.post("/api/token/verify/", json={"token": pair["access"]})).status_code,
    ]


async def test_a_new_password_revokes_every_token(
    client: httpx.AsyncClient, server, world: World, conn: asyncpg.Connection
):
    old = await sign_in(client, "alice", "secret-pw")
    async with (
        open_socket(server, old["access"]) as ws,
        open_socket(server, world.bob.token) as bob,
    ):
        # As `citelink user set-password` does it: plain SQL.
        await conn.execute(
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            passwords.hash_password("new-pw"),
            world.alice.id,
        )
        assert await ws.close_code() == 4401
        assert ws.connection.close_reason == "token has been revoked"
        assert await bob.request("ping") == {"type": "pong"}
    assert await everything_of(client, old) == [401, 401, 401]
    assert (await me(client, old["access"])).json() == REVOKED
    # Signing in again works, on REST and on a socket.
    new = await sign_in(client, "alice", "new-pw")
    assert await everything_of(client, new) == [200, 200, 200]
    async with open_socket(server, new["access"]) as ws:
        assert await ws.request("ping") == {"type": "pong"}
    # Changing anything else of the user revokes nothing.
    await conn.execute("UPDATE users SET is_staff = true WHERE id = $1", world.alice.id)
    assert (await me(client, new["access"])).status_code == 200


async def test_deactivating_then_activating_leaves_old_tokens_revoked(
    client: httpx.AsyncClient, world: World, conn: asyncpg.Connection
):
    old = await sign_in(client, "alice", "secret-pw")
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", world.alice.id)
    await conn.execute("UPDATE users SET is_active = true WHERE id = $1", world.alice.id)
    assert await everything_of(client, old) == [401, 401, 401]
    assert (await me(client, world.alice.token)).json() == REVOKED
    assert await everything_of(client, await sign_in(client, "alice", "secret-pw")) == [200] * 3


async def test_signing_out_everywhere(client: httpx.AsyncClient, server, world: World):
    laptop = await sign_in(client, "alice", "secret-pw")
    phone = await sign_in(client, "alice", "secret-pw")
    async with (
        open_socket(server, laptop["access"]) as tab,
        open_socket(server, phone["access"]) as app,
        open_socket(server, world.bob.token) as bob,
    ):
        r = await client.post(
            "/api/token/revoke-all/", headers={"Authorization": f"Bearer {phone['access']}"}
        )
        assert (r.status_code, r.content) == (204, b"")
        assert [await tab.close_code(), await app.close_code()] == [4401, 4401]
        # A socket opened with a new sign-in right away stays open.
        fresh = await sign_in(client, "alice", "secret-pw")
        async with open_socket(server, fresh["access"]) as ws:
            await asyncio.sleep(0.3)
            assert await ws.request("ping") == {"type": "pong"}
        assert await bob.request("ping") == {"type": "pong"}
    for pair in (laptop, phone):
        assert await everything_of(client, pair) == [401, 401, 401]
    assert (await me(client, world.bob.token)).status_code == 200
    assert (await client.post("/api/token/revoke-all/")).status_code == 401


async def test_a_revoked_token_opens_no_socket_and_renews_none(
    client: httpx.AsyncClient, server, world: World, conn: asyncpg.Connection
):
    old = await sign_in(client, "alice", "secret-pw")
    await client.post(
        "/api/token/revoke-all/", headers={"Authorization": f"Bearer {old['access']}"}
    )
    async with open_socket(server, old["access"]) as ws:
        assert await ws.close_code() == 4401
        assert ws.connection.close_reason == "token has been revoked"
    # On an open socket, an `auth` frame with a revoked token is refused.
    new = await sign_in(client, "alice", "secret-pw")
    async with open_socket(server, new["access"]) as ws:
        assert await ws.request("auth", token=old["access"]) == {
            "type": "error",
            "code": "invalid_token",
            "detail": "the token has been revoked",
        }
        assert await ws.request("ping") == {"type": "pong"}


async def test_tokens_without_a_generation_or_family_are_refused(
    client: httpx.AsyncClient, world: World
):
    """Tokens issued before revocation existed (no `gen`, no `family`)."""
    base = tokens.decode(SECRET_KEY, world.alice.token, "access")
    old_access = jwt.encode({k: v for k, v in base.items() if k != "gen"}, SECRET_KEY)
    old_refresh = jwt.encode({**base, "token_type": "refresh"}, SECRET_KEY)
    assert (await me(client, old_access)).status_code == 401
    assert (await refreshed(client, old_refresh)).status_code == 401
    odd_family = jwt.encode({**base, "token_type": "refresh", "family": 5}, SECRET_KEY)
    assert (await refreshed(client, odd_family)).status_code == 401


async def test_a_revocation_missed_while_the_listener_was_down_still_closes(
    settings, conn, db_url, world: World
):
    proxy = FreezableProxy(db_url)
    proxied = await proxy.start()
    try:
        async with (
            serving(settings, database_url=proxied, listener_probe_seconds=0.3) as server,
            open_socket(server, world.alice.token) as ws,
            open_socket(server, world.bob.token) as other,
        ):
            with logged("citelink.relay.listener", "listener probe got no answer") as noticed:
                proxy.freeze()
                # Its `revoke` event is stuck in the frozen link, then lost.
                await conn.execute(
                    "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1",
                    world.alice.id,
                )
                await asyncio.wait_for(noticed.wait(), 5)
            proxy.thaw()
            assert await ws.close_code() == 4401
            assert ws.connection.close_reason == "token has been revoked"
            # The back-fill may tell it its unread count first.
            await other.send(type="ping")
            assert (await other.recv_until("pong"))[-1] == {"type": "pong"}
    finally:
        await proxy.stop()
