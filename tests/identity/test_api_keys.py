"""API keys for services: made, listed and revoked by staff (REST and CLI),
scoped, hashed at rest, audited as the actor, never logged, refused on the socket."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal

import httpx

from citelink.server import logs
from tests.support.data import SECRET_KEY
from tests.support.processes import citelink, citelink_serve
from tests.support.world import World
from tests.support.wsclient import open_socket


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_key(client: httpx.AsyncClient, world: World, *scopes: str) -> dict:
    body = {"name": "backend", **({"scopes": list(scopes)} if scopes else {})}
    r = await client.post("/api/keys/", json=body, headers=world.staff.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_key_is_shown_once_and_stored_hashed(client, world: World, conn):
    made = await make_key(client, world)
    key = made["key"]
    assert key.startswith(f"cl_{made['prefix']}_") and len(key) == 3 + 12 + 1 + 43
    assert made["scopes"] == ["publish"] and made["created_by"] == world.staff.id
    listed = (await client.get("/api/keys/", headers=world.staff.headers)).json()["results"]
    assert listed == [{k: v for k, v in made.items() if k != "key"}]
    row = await conn.fetchrow("SELECT * FROM api_key")
    assert row["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(dict(row)) and key.split("_", 2)[2] not in str(dict(row))


async def test_publish_scope(client, world: World, conn):
    key = bearer((await make_key(client, world, "publish"))["key"])
    allowed = [
        await client.post("/api/tags/", json={"name": "orders"}, headers=key),
        await client.get("/api/tags/", headers=key),
        await client.post(
            "/api/subscriptions/", json={"user": "ext:42", "tag": world.spare}, headers=key
        ),
        await client.get("/api/subscriptions/", params={"user": world.alice.id}, headers=key),
        await client.post(
            "/api/notifications/",
            json={"message": "from a backend", "tag": world.spare, "users": [world.bob.id]},
            headers=key,
        ),
        await client.post("/api/users/external/", json={"external_ids": ["ext:42"]}, headers=key),
    ]
    assert [r.status_code for r in allowed] == [201, 200, 201, 200, 201, 200]
    assert allowed[4].json()["recipients"] == 2  # ext:42 by its subscription, bob listed
    assert allowed[5].json()["users"][0]["external_id"] == "42"
    refused = {
        path: await client.request(method, path, headers=key)
        for method, path in [
            ("GET", "/api/users/"),
            ("GET", "/api/audit/"),
            ("GET", "/api/keys/"),
            ("GET", "/api/notifications/"),
            ("GET", "/api/inbox/"),
            ("GET", "/api/users/me/"),
            ("POST", "/api/token/revoke-all/"),
        ]
    }
    assert {p: r.status_code for p, r in refused.items()} == dict.fromkeys(refused, 403)
    assert refused["/api/users/"].json() == {"detail": "this API key lacks the 'admin' scope"}
    assert refused["/api/inbox/"].json() == {
        "detail": "API keys may not use this route: it acts as a signed-in user"
    }
    # A key acts for no user: a subscription must name one.
    r = await client.post("/api/subscriptions/", json={"tag": world.extra}, headers=key)
    assert (r.status_code, r.json()["errors"]) == (422, {"user": "an API key must name the user"})


async def test_admin_scope_does_what_staff_do(client, world: World):
    key = bearer((await make_key(client, world, "admin"))["key"])
    assert (await client.get("/api/users/", headers=key)).status_code == 200
    assert (await client.get("/api/audit/", headers=key)).status_code == 200
    r = await client.post("/api/keys/", json={"name": "made by a key"}, headers=key)
    assert r.status_code == 201
    assert (await client.get("/api/inbox/", headers=key)).status_code == 403


async def test_revocation_takes_effect_on_the_next_request(client, world: World):
    made = await make_key(client, world)
    # One keep-alive connection throughout: nothing about the key is cached.
    async with httpx.AsyncClient(base_url=str(client.base_url), headers=bearer(made["key"])) as b:
        assert (await b.get("/api/tags/")).status_code == 200
        r = await client.delete(f"/api/keys/{made['id']}/", headers=world.staff.headers)
        assert r.status_code == 204
        r = await b.get("/api/tags/")
        assert (r.status_code, r.json()) == (401, {"detail": "API key has been revoked"})
    listed = (await client.get("/api/keys/", headers=world.staff.headers)).json()["results"]
    assert listed[0]["revoked_at"] is not None
    assert (await client.delete("/api/keys/999/", headers=world.staff.headers)).status_code == 404


async def test_bad_keys_and_bad_requests_are_4xx_json(client, world: World):
    made = await make_key(client, world)
    key = made["key"]
    for bad in (
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        key + "x",
        "cl_",
        "cl_zz_zz",
        key[:20],
    ):
        r = await client.get("/api/tags/", headers=bearer(bad))
        assert (r.status_code, r.json()) == (401, {"detail": "API key is invalid"}), bad
    for body in (
        {},
        {"name": ""},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": "admin"},
        {"name": "x" * 101},
    ):
        r = await client.post("/api/keys/", json=body, headers=world.staff.headers)
        assert r.status_code == 422 and r.json()["detail"], body
    r = await client.post("/api/keys/", json={"name": "x"}, headers=world.alice.headers)
    assert r.status_code == 403


async def test_writes_with_a_key_are_audited_with_the_key_as_actor(client, world: World):
    made = await make_key(client, world)
    key = bearer(made["key"])
    tag = (await client.post("/api/tags/", json={"name": "orders"}, headers=key)).json()["id"]
    r = await client.post(
        "/api/subscriptions/", json={"user": world.bob.id, "tag": tag}, headers=key
    )
    await client.post("/api/notifications/", json={"message": "m", "tag": tag}, headers=key)
    r = await client.get(
        "/api/audit/", params={"actor_key": made["id"]}, headers=world.staff.headers
    )
    entries = r.json()["results"]
    assert [e["resource"] for e in entries] == ["notification", "subscription", "tag"]
    assert {(e["actor"], e["actor_key"]) for e in entries} == {(None, made["id"])}
    # A staff user's own writes name the user and no key.
    await client.post("/api/tags/", json={"name": "by-staff"}, headers=world.staff.headers)
    latest = (await client.get("/api/audit/", headers=world.staff.headers)).json()["results"][0]
    assert (latest["actor"], latest["actor_key"]) == (world.staff.id, None)


async def test_keys_and_users_made_with_a_key_are_audited_with_the_key(client, world: World):
    admin = await make_key(client, world, "admin")
    key = bearer(admin["key"])
    r = await client.post("/api/keys/", json={"name": "made by a key"}, headers=key)
    made = r.json()
    assert (made["created_by"], made["created_by_key"]) == (None, admin["id"])
    body = {"username": "ops", "password": "pw-of-ops", "is_staff": True}
    staff = (await client.post("/api/users/", json=body, headers=key)).json()
    # A publish key makes users of new external ids three ways.
    publisher = bearer(made["key"])
    r = await client.post(
        "/api/users/external/", json={"external_ids": ["ext:7"]}, headers=publisher
    )
    by_route = r.json()["users"][0]["id"]
    body = {"message": "m", "users": ["ext:8"]}
    assert (await client.post("/api/notifications/", json=body, headers=publisher)).is_success
    body = {"user": "ext:9", "tag": world.spare}
    assert (await client.post("/api/subscriptions/", json=body, headers=publisher)).is_success
    assert (await client.delete(f"/api/keys/{made['id']}/", headers=key)).status_code == 204

    async def audited(**params) -> list[dict]:
        r = await client.get("/api/audit/", params=params, headers=world.staff.headers)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    entries = await audited(actor_key=admin["id"])
    assert [(e["resource"], e["action"], e["object_id"]) for e in entries] == [
        ("api_key", "update", made["id"]),
        ("users", "create", staff["id"]),
        ("api_key", "create", made["id"]),
    ]
    assert {e["actor"] for e in entries} == {None}
    created = entries[2]["changes"]
    assert created["name"] == [None, "made by a key"]
    assert created["created_by_key"] == [None, admin["id"]]
    assert "hash" not in created and "password_hash" not in entries[1]["changes"]
    assert entries[1]["changes"]["is_staff"] == [None, True]
    assert entries[0]["changes"]["revoked_at"][0] is None
    users = await audited(actor_key=made["id"], resource="users")
    assert [e["action"] for e in users] == ["create"] * 3
    assert users[-1]["object_id"] == by_route
    assert sorted(e["changes"]["external_id"][1] for e in users) == ["7", "8", "9"]
    # A staff user's key revocation names the user.
    await client.delete(f"/api/keys/{admin['id']}/", headers=world.staff.headers)
    latest = (await audited(resource="api_key", object_id=admin["id"]))[0]
    assert (latest["action"], latest["actor"], latest["actor_key"]) == (
        "update",
        world.staff.id,
        None,
    )


async def test_keys_are_refused_on_the_socket(client, server, world: World):
    key = (await make_key(client, world, "admin"))["key"]
    async with open_socket(server, key) as ws:
        assert await ws.close_code() == 4401
        assert ws.connection.close_reason == (
            "API keys are not accepted on sockets: use a user's access token"
        )
    async with open_socket(server, world.alice.token) as ws:
        answer = await ws.request("auth", token=key)
        assert answer["code"] == "invalid_token" and "API keys" in answer["detail"]


def test_keys_are_redacted_from_every_log_line():
    key = "cl_0123456789ab_" + "S3cr-t_" * 6
    record = logging.LogRecord("citelink.api", logging.INFO, "", 0, "got %s", (key,), None)
    assert logs.RedactTokens().filter(record)
    assert record.getMessage() == "got cl_0123456789ab_[redacted]"
    # On every handler, so what child loggers write is redacted as well.
    config = logs.log_config()
    assert all("redact" in h["filters"] for h in config["handlers"].values())


async def test_serve_never_logs_a_key(conn, db_url, tmp_path):
    made = await asyncio.to_thread(citelink, "apikey", "create", "svc", env=_env(db_url, tmp_path))
    made = made.stdout.strip()
    async with citelink_serve(db_url, tmp_path) as serve:
        async with httpx.AsyncClient(base_url=serve.server.http) as http:
            assert (await http.get("/api/tags/", headers=bearer(made))).status_code == 200
            await http.get("/readyz", params={"token": made})
            await http.get(f"/nowhere/{made}")
        async with open_socket(serve.server, made) as ws:
            assert await ws.close_code() == 4401
        serve.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.process.wait(), 15)
    log = serve.output.decode()
    assert "cl_" in log and made.split("_", 2)[2] not in log


def _env(db_url, tmp_path) -> dict[str, str]:
    """As the CLI tests run it."""
    return {
        **os.environ,
        "CITELINK_DATABASE_URL": db_url,
        "CITELINK_SECRET_KEY": SECRET_KEY,
        "CITELINK_DATA_DIR": str(tmp_path / "unused"),
    }


async def test_cli_creates_lists_and_revokes_keys(db_url, tmp_path, conn):
    env = _env(db_url, tmp_path)
    made = await asyncio.to_thread(
        citelink, "apikey", "create", "billing", "--scope", "publish", "--scope", "admin", env=env
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("cl_") and "shown this once" in made.stderr
    row = await conn.fetchrow("SELECT id, prefix, scopes, hash FROM api_key")
    assert row["scopes"] == ["admin", "publish"] and key not in row["hash"]
    listing = await asyncio.to_thread(citelink, "apikey", "list", env=env)
    assert f"cl_{row['prefix']}_..." in listing.stdout and "billing" in listing.stdout
    assert key.split("_", 2)[2] not in listing.stdout
    revoked = await asyncio.to_thread(citelink, "apikey", "revoke", row["prefix"], env=env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert "revoked" in (await asyncio.to_thread(citelink, "apikey", "list", env=env)).stdout
    second = await asyncio.to_thread(citelink, "apikey", "create", "other", env=env)
    other_id = await conn.fetchval("SELECT max(id) FROM api_key")
    by_id = await asyncio.to_thread(citelink, "apikey", "revoke", str(other_id), env=env)
    assert by_id.returncode == 0 and second.returncode == 0
    missing = await asyncio.to_thread(citelink, "apikey", "revoke", "nosuchkey", env=env)
    assert missing.returncode == 1 and "no API key 'nosuchkey'" in missing.stderr
    bad = await asyncio.to_thread(citelink, "apikey", "create", "x", "--scope", "root", env=env)
    assert bad.returncode == 2
