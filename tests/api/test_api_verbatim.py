"""SQL-shaped and HTML-shaped strings in every text field are stored and given
back exactly as sent: by REST, over the WebSocket, in the audit trail, and in
the database itself. Nothing is executed, escaped or trimmed."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from tests.support.world import World
from tests.support.wsclient import open_socket

HOSTILE = [
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE tag;--",
    "1' OR '1'='1",
    '" OR ""="',
    "admin'--",
    "x'; SELECT pg_sleep(10); --",
    "$1 $$ $body$ %s %(x)s {0} {{x}} ?",
    "\\'; \\\\ \\x27 E'\\n'",
    "<script>alert('x')</script>",
    '<img src=x onerror="alert(1)">',
    "&lt;b&gt; &amp; &#x27; &#39;",
    "]]><!-- --><?xml?>",
    "javascript:alert(1)",
    "{{7*7}} ${7*7} <%= 7*7 %>",
    '{"type": "read", "id": 1}',
    "  leading and trailing spaces, tab\tnewline\n  ",
    "\u202e right-to-left \u200b zero width \ufeff bom",
    "é Ω 🙂 \U0001f600",
]


@pytest.fixture
def settings(settings):
    # Each password is tried four times, all from one address: no sign-in throttle.
    return dataclasses.replace(settings, login_attempts_per_client=0, login_failures_per_user=0)


async def test_hostile_strings_round_trip_verbatim(
    client: httpx.AsyncClient, server, world: World, conn
):
    staff = world.staff.headers
    users_before = await conn.fetchval("SELECT count(*) FROM users")
    async with open_socket(server, world.alice.token) as ws:
        for i, text in enumerate(HOSTILE):
            r = await client.post("/api/tags/", json={"name": text}, headers=staff)
            assert (r.status_code, r.json()["name"]) == (201, text)
            tag = r.json()["id"]
            assert (await client.get(f"/api/tags/{tag}/", headers=staff)).json()["name"] == text
            r = await client.post(
                "/api/subscriptions/", json={"tag": tag, "user": world.alice.id}, headers=staff
            )
            assert r.status_code == 201
            data = {text: text, "nested": [text, {text: [text]}]}
            r = await client.post(
                "/api/notifications/",
                json={"message": text, "tag": tag, "data": data},
                headers=staff,
            )
            assert r.status_code == 201
            published = r.json()
            assert (published["message"], published["data"]) == (text, data)
            r = await client.get(f"/api/notifications/{published['id']}/", headers=staff)
            note = r.json()
            assert (note["message"], note["data"]) == (text, data)

            pushed = [f for f in await ws.recv_until("counts") if f["type"] == "notification"]
            assert [(f["message"], f["data"], f["tag_name"]) for f in pushed] == [
                (text, data, text)
            ]
            item = (await client.get("/api/inbox/?limit=1", headers=world.alice.headers)).json()
            assert (item["results"][0]["message"], item["results"][0]["data"]) == (text, data)
            assert item["results"][0]["tag_name"] == text

            stored = await conn.fetchrow(
                "SELECT n.message, n.data, t.name FROM notification n "
                "JOIN tag t ON t.id = n.tag_id WHERE n.id = $1",
                published["id"],
            )
            assert tuple(stored) == (text, data, text)
            audit = await client.get(f"/api/audit/?resource=tag&object_id={tag}", headers=staff)
            assert audit.json()["results"][0]["changes"]["name"] == [None, text]

            # A password is compared byte for byte, never interpreted.
            username = f"user{i}"
            r = await client.post(
                "/api/users/", json={"username": username, "password": text}, headers=staff
            )
            assert r.status_code == 201
            good = {"username": username, "password": text}
            assert (await client.post("/api/token/", json=good)).status_code == 200
            for wrong in ("' OR '1'='1", text + " ", text.strip() + "x"):
                bad = {"username": username, "password": wrong}
                assert (await client.post("/api/token/", json=bad)).status_code == 401

    assert await conn.fetchval("SELECT count(*) FROM users") == users_before + len(HOSTILE)
    # A name refused by the username rule is a 422, never a query.
    r = await client.post(
        "/api/users/", json={"username": "x'; DROP TABLE users; --", "password": "p"}, headers=staff
    )
    assert r.status_code == 422 and "username" in r.json()["errors"]
