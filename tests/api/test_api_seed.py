"""The seed README's requests, replayed as written, and the main REST flows."""

from __future__ import annotations

import re

import httpx

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


async def test_seed_readme_requests(client: httpx.AsyncClient, make_user, conn):
    await make_user("admin", staff=True, password="admin")

    r = await client.post("/api/token/", json={"username": "admin", "password": "admin"})
    assert r.status_code == 200
    assert set(r.json()) == {"refresh", "access"}
    auth = {"Authorization": f"Bearer {r.json()['access']}"}

    r = await client.post("/api/tags/", json={"name": "deportes"}, headers=auth)
    assert (r.status_code, r.json()) == (201, {"id": 1, "name": "deportes", "critical": False})

    r = await client.post("/api/subscriptions/", json={"user": 1, "tag": 1}, headers=auth)
    assert (r.status_code, r.json()) == (201, {"id": 1, "user": 1, "tag": 1, "mode": "live"})

    r = await client.post(
        "/api/notifications/", json={"message": "nueva notificacion", "tag": 1}, headers=auth
    )
    assert r.status_code == 201
    body = r.json()
    assert {k: body[k] for k in ("tag", "message", "data", "recipients")} == {
        "tag": 1,
        "message": "nueva notificacion",
        "data": {},
        "recipients": 1,
    }
    # The seed's fields, and the delivery fields since added.
    assert {"id", "tag", "message", "data", "timestamp", "recipients"} <= set(body)
    assert ISO_UTC.fullmatch(body["timestamp"])
    # The 201 came after the inbox row was committed.
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM user_notification WHERE notification_id = $1", body["id"]
        )
        == 1
    )
