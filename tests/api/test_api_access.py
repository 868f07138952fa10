"""Who may call what: every route by anonymous / user / another user / staff.

"user" is alice, the owner of the items addressed; "other" is bob, acting on
alice's items; staff is admin. Each role runs the whole table against a
world of its own. Another user's item answers 404 exactly like a missing
one, and nothing of alice's ever reaches bob.
"""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route

from citelink.server.app import create_app
from citelink.settings import Settings
from tests.support.data import Partial
from tests.support.world import SECRET, World

ROLES = ("anonymous", "user", "other", "staff")

# (method, path, body, expected status per role), run in this order by each
# role against one world: a destructive call comes after every call that
# needs its target. `{name}` stands for an id of the world (see _ids).
MATRIX = [
    ("POST", "/api/token/", {"username": "alice", "password": "secret-pw"}, (200, 200, 200, 200)),
    ("POST", "/api/token/refresh/", "refresh", (200, 200, 200, 200)),
    ("POST", "/api/token/verify/", "verify", (200, 200, 200, 200)),
    ("POST", "/api/token/blacklist/", "refresh", (200, 200, 200, 200)),
    ("GET", "/api/users/me/", None, (401, 200, 200, 200)),
    ("GET", "/api/users/", None, (401, 403, 403, 200)),
    ("POST", "/api/users/", {"username": "carol", "password": "pw"}, (401, 403, 403, 201)),
    ("POST", "/api/users/external/", {"external_ids": ["ext:a1"]}, (401, 403, 403, 200)),
    ("GET", "/api/keys/", None, (401, 403, 403, 200)),
    # The world has no API keys yet: whatever the id, there is none to revoke.
    ("DELETE", "/api/keys/{news}/", None, (401, 403, 403, 404)),
    ("POST", "/api/keys/", {"name": "backend"}, (401, 403, 403, 201)),
    ("GET", "/api/tags/", None, (401, 200, 200, 200)),
    ("POST", "/api/tags/", {"name": "new"}, (401, 403, 403, 201)),
    ("GET", "/api/tags/{news}/", None, (401, 200, 200, 200)),
    ("PATCH", "/api/tags/{news}/", {"name": "renamed"}, (401, 403, 403, 200)),
    ("DELETE", "/api/tags/{spare}/", None, (401, 403, 403, 204)),
    ("GET", "/api/subscriptions/", None, (401, 200, 200, 200)),
    ("POST", "/api/subscriptions/", {"tag": "{extra}"}, (401, 201, 201, 201)),
    ("POST", "/api/subscriptions/", {"user": "{alice}", "tag": "{news}"}, (401, 409, 403, 409)),
    ("PATCH", "/api/subscriptions/{alice_sub}/", {"mode": "inbox"}, (401, 200, 404, 200)),
    ("DELETE", "/api/subscriptions/{alice_sub}/", None, (401, 204, 404, 204)),
    ("POST", "/api/subscriptions/", {"user": "{alice}", "tag": "{news}"}, (401, 201, 403, 201)),
    ("POST", "/api/notifications/", {"message": "m", "tag": "{news}"}, (401, 403, 403, 201)),
    ("GET", "/api/notifications/", None, (401, 403, 403, 200)),
    ("GET", "/api/notifications/{secret_note}/", None, (401, 403, 403, 200)),
    ("DELETE", "/api/notifications/{secret_note}/", None, (401, 403, 403, 409)),
    ("GET", "/api/inbox/", None, (401, 200, 200, 200)),
    ("GET", "/api/inbox/counts/", None, (401, 200, 200, 200)),
    ("GET", "/api/inbox/{alice_item}/", None, (401, 200, 404, 404)),
    ("PATCH", "/api/inbox/{alice_item}/", {"is_read": True}, (401, 200, 404, 404)),
    ("POST", "/api/inbox/{alice_item}/interact/", {}, (401, 200, 404, 404)),
    ("DELETE", "/api/inbox/{alice_item}/", None, (401, 204, 404, 404)),
    ("POST", "/api/inbox/read-all/", None, (401, 200, 200, 200)),
    ("POST", "/api/inbox/seen-all/", None, (401, 200, 200, 200)),
    ("POST", "/api/inbox/bulk/", {"action": "seen"}, (401, 200, 200, 200)),
    ("GET", "/api/audit/", None, (401, 403, 403, 200)),
    ("GET", "/openapi.json", None, (200, 200, 200, 200)),
    ("GET", "/healthz", None, (200, 200, 200, 200)),
    ("GET", "/readyz", None, (200, 200, 200, 200)),
    # Last: it revokes the caller's token.
    ("POST", "/api/token/revoke-all/", None, (401, 204, 204, 204)),
]


def _ids(world: World) -> dict[str, int]:
    return {
        "news": world.news,
        "spare": world.spare,
        "extra": world.extra,
        "alice": world.alice.id,
        "alice_sub": world.alice_sub,
        "secret_note": world.secret_note,
        "alice_item": world.alice_item,
    }


def _fill(value, ids: dict[str, int]):
    """`{name}` as a whole body value: the id itself (an int)."""
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    return value


async def _body(client: httpx.AsyncClient, body, world: World):
    """The request body; "refresh" / "verify" need a live token of alice's."""
    if body == "refresh":
        login = {"username": "alice", "password": "secret-pw"}
        return {"refresh": (await client.post("/api/token/", json=login)).json()["refresh"]}
    if body == "verify":
        return {"token": world.alice.token}
    return _fill(body, _ids(world))


@pytest.mark.parametrize("role", ROLES)
async def test_every_route_for(client: httpx.AsyncClient, world: World, conn, role: str):
    caller = {"anonymous": None, "user": world.alice, "other": world.bob, "staff": world.staff}
    headers = caller[role].headers if caller[role] else {}
    wrong = []
    for method, path, body, expected in MATRIX:
        url = path.format(**_ids(world))
        r = await client.request(
            method, url, json=await _body(client, body, world), headers=headers
        )
        if r.status_code != expected[ROLES.index(role)]:
            wrong.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
        elif r.status_code >= 400 and not r.json().get("detail"):
            wrong.append(f"{method} {path}: no detail in {r.text[:200]}")
        if role == "other" and SECRET in r.text:
            wrong.append(f"{method} {path}: alice's notification leaked to bob")
    assert wrong == []
    if role != "user":
        # Nobody but alice changed her item.
        item = await conn.fetchrow(
            "SELECT is_read, is_deleted FROM user_notification WHERE id = $1", world.alice_item
        )
        assert dict(item) == {"is_read": False, "is_deleted": False}


def test_the_table_covers_every_route():
    # Building the app connects to nothing; the URL is never used.
    settings = Settings(database_url="postgresql://unused/", secret_key="unused")
    covered = {(m, re.sub(r"\{\w+\}", "{id}", p)) for m, p, *_ in MATRIX}
    routes = {
        (method, route.path.replace("{id:int}", "{id}"))
        for route in create_app(settings).routes
        if isinstance(route, Route)
        and route.path.startswith(("/api/", "/openapi", "/healthz", "/readyz"))
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert routes - covered == set()


async def test_another_users_item_looks_missing(client: httpx.AsyncClient, world: World):
    """bob cannot tell alice's item from one that does not exist."""
    missing = world.alice_item + 1000
    for method, body in (("GET", None), ("PATCH", {"is_read": True}), ("DELETE", None)):
        theirs = await client.request(
            method, f"/api/inbox/{world.alice_item}/", json=body, headers=world.bob.headers
        )
        nothing = await client.request(
            method, f"/api/inbox/{missing}/", json=body, headers=world.bob.headers
        )
        assert (theirs.status_code, theirs.json()) == (nothing.status_code, nothing.json())
        assert theirs.status_code == 404


async def test_lists_hold_only_the_callers_own(client: httpx.AsyncClient, world: World):
    bob = world.bob.headers
    inbox = (await client.get("/api/inbox/", headers=bob)).json()
    assert [i["id"] for i in inbox["results"]] == [world.bob_item]
    subscriptions = (await client.get("/api/subscriptions/", headers=bob)).json()
    assert [s["user"] for s in subscriptions["results"]] == [world.bob.id]
    counts = (await client.get("/api/inbox/counts/", headers=bob)).json()
    assert counts == Partial(unread=1, total=1)

    # bob marking all read or filtering by alice's tag touches nothing of hers.
    r = await client.post(f"/api/inbox/read-all/?tag={world.private}", headers=bob)
    assert r.json() == {"updated": 0}
    r = await client.get(f"/api/inbox/?tag={world.private}", headers=bob)
    assert r.json() == {"results": [], "next": None, "pinned": []}
    r = await client.get(f"/api/subscriptions/?user={world.alice.id}", headers=bob)
    assert r.status_code == 403
    alice = (await client.get("/api/inbox/counts/", headers=world.alice.headers)).json()
    assert alice == Partial(unread=2, total=2)

    # Staff list everyone's subscriptions, or one user's.
    r = await client.get(f"/api/subscriptions/?user={world.alice.id}", headers=world.staff.headers)
    assert {s["user"] for s in r.json()["results"]} == {world.alice.id}
    r = await client.get("/api/subscriptions/", headers=world.staff.headers)
    assert {s["user"] for s in r.json()["results"]} == {world.alice.id, world.bob.id}
