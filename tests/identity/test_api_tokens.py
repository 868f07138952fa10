"""Tokens: obtain, refresh and verify, and every way a bearer token can be wrong."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from citelink.identity import tokens
from tests.support.data import SECRET_KEY
from tests.support.world import World, bad_tokens

# The HS512 token below is signed with the (short for HS512) test key on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


async def test_bad_bearer_tokens_are_refused(client: httpx.AsyncClient, world: World):
    wrong = []
    for label, token in bad_tokens(world.alice.id).items():
        # As bytes: HTTP headers are not text, and a client may send any.
        header = f"Bearer {token}".encode()
        r = await client.get("/api/users/me/", headers={"Authorization": header})
        if r.status_code != 401 or r.headers.get("www-authenticate") != "Bearer":
            wrong.append(f"{label}: {r.status_code} {r.text}")
    assert wrong == []


async def test_authorization_header_must_be_bearer(client: httpx.AsyncClient, world: World):
    token = world.alice.token
    for header in (token, f"Token {token}", f"Basic {token}", "Bearer", f"JWT {token}"):
        r = await client.get("/api/users/me/", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["detail"]
    r = await client.get("/api/users/me/")
    assert r.json() == {"detail": "authentication credentials were not provided"}
    # The scheme is case-insensitive (RFC 7235).
    r = await client.get("/api/users/me/", headers={"Authorization": f"bearer {token}"})
    assert r.json() == {"id": world.alice.id, "username": "alice", "is_staff": False}


async def test_obtain_refresh_verify(client: httpx.AsyncClient, world: World):
    r = await client.post("/api/token/", json={"username": "ALICE", "password": "secret-pw"})
    assert r.status_code == 200
    pair = r.json()
    claims = jwt.decode(pair["access"], SECRET_KEY, algorithms=["HS256"])
    assert claims["token_type"] == "access" and claims["user_id"] == world.alice.id
    assert claims["exp"] - claims["iat"] == 59 * 60
    refresh_claims = jwt.decode(pair["refresh"], SECRET_KEY, algorithms=["HS256"])
    assert refresh_claims["exp"] - refresh_claims["iat"] == 24 * 60 * 60

    r = await client.post("/api/token/refresh/", json={"refresh": pair["refresh"]})
    rotated = r.json()
    assert set(rotated) == {"access", "refresh"}
    me = await client.get(
        "/api/users/me/", headers={"Authorization": f"Bearer {rotated['access']}"}
    )
    assert me.json()["id"] == world.alice.id

    for token in (pair["access"], rotated["access"], rotated["refresh"]):
        r = await client.post("/api/token/verify/", json={"token": token})
        assert (r.status_code, r.json()) == (200, {})
    # The refresh token that was exchanged is used up.
    r = await client.post("/api/token/verify/", json={"token": pair["refresh"]})
    assert (r.status_code, r.json()) == (401, {"detail": "token has been revoked"})


async def test_refresh_and_verify_refuse_bad_tokens(client: httpx.AsyncClient, world: World):
    access = world.alice.token
    bad_refresh = {
        **bad_tokens(world.alice.id),
        "access, not refresh": access,
        "expired refresh": tokens.issue(SECRET_KEY, world.alice.id, "refresh", -1),
    }
    del bad_refresh["refresh, not access"]
    wrong = []
    for label, token in bad_refresh.items():
        r = await client.post("/api/token/refresh/", json={"refresh": token})
        if r.status_code != 401:
            wrong.append(f"refresh, {label}: {r.status_code} {r.text}")
    for label, token in bad_tokens(world.alice.id).items():
        if label == "refresh, not access":  # verify accepts both kinds
            continue
        r = await client.post("/api/token/verify/", json={"token": token})
        if r.status_code != 401:
            wrong.append(f"verify, {label}: {r.status_code} {r.text}")
    assert wrong == []


async def test_a_token_used_before_is_refused_once_it_expires(
    client: httpx.AsyncClient, world: World
):
    # Checked tokens are remembered (citelink.identity.tokens): never past their expiry.
    token = tokens.issue(SECRET_KEY, world.alice.id, "access", 1 / 60)
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(2):
        assert (await client.get("/api/users/me/", headers=headers)).status_code == 200
    expires = jwt.decode(token, SECRET_KEY, algorithms=["HS256"])["exp"]
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    r = await client.get("/api/users/me/", headers=headers)
    assert (r.status_code, r.json()) == (401, {"detail": "token is invalid or expired"})


def test_a_remembered_token_is_remembered_for_its_key_only():
    token = tokens.issue(SECRET_KEY, 1, "access", 5)
    assert tokens.decode(SECRET_KEY, token, "access")["user_id"] == 1
    with pytest.raises(tokens.InvalidToken):
        tokens.decode(SECRET_KEY + "-another", token, "access")
    with pytest.raises(tokens.InvalidToken):
        tokens.decode(SECRET_KEY, token, "refresh")


async def test_wrong_credentials(client: httpx.AsyncClient, world: World):
    for username, password in (
        ("alice", "wrong"),
        ("nobody", "secret-pw"),
        ("alice", "secret-pw "),
    ):
        r = await client.post("/api/token/", json={"username": username, "password": password})
        assert r.status_code == 401
        assert r.json() == {"detail": "no active account found with the given credentials"}


async def test_deactivated_or_deleted_user_is_refused_everywhere(
    client: httpx.AsyncClient, world: World, conn
):
    login = {"username": "alice", "password": "secret-pw"}
    refresh = (await client.post("/api/token/", json=login)).json()["refresh"]
    access = world.alice.token
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", world.alice.id)

    r = await client.get("/api/users/me/", headers=world.alice.headers)
    assert r.status_code == 401
    # With the right password, the answer says what to fix; with a wrong one, nothing.
    r = await client.post("/api/token/", json=login)
    assert (r.status_code, r.json()) == (401, {"detail": "this account is deactivated"})
    r = await client.post("/api/token/", json=login | {"password": "wrong"})
    assert r.json() == {"detail": "no active account found with the given credentials"}
    assert (await client.post("/api/token/refresh/", json={"refresh": refresh})).status_code == 401
    assert (await client.post("/api/token/verify/", json={"token": access})).status_code == 401

    # bob's token works; once bob is deleted, it does not.
    assert (await client.get("/api/users/me/", headers=world.bob.headers)).status_code == 200
    await conn.execute("DELETE FROM users WHERE id = $1", world.bob.id)
    assert (await client.get("/api/users/me/", headers=world.bob.headers)).status_code == 401


async def test_a_token_in_the_query_string_of_an_http_route_is_refused(
    client: httpx.AsyncClient, world: World
):
    """Only sockets take `?token=` (browsers cannot set headers there)."""
    for name in ("token", "access", "access_token", "jwt"):
        r = await client.get("/api/users/me/", params={name: world.alice.token})
        assert r.status_code == 401, name
        assert r.json() == {"detail": "authentication credentials were not provided"}
    r = await client.get("/api/inbox/", params={"token": world.alice.token})
    assert r.status_code == 401
