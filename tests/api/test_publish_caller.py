"""A publish checks its caller in its own statement (citelink.api.endpoint,
`confirms_caller`): a staff token whose user has since lost the right to
publish is refused exactly as by the authentication query, answers in the
same order (401, then 403, before anything about the body or the budget),
and publishes nothing."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest

from citelink.api.notifications import publish
from tests.support.world import World

REVOKED = (401, {"detail": "user is inactive or deleted"})
TOKENS_REVOKED = (401, {"detail": "token has been revoked"})
NOT_STAFF = (403, {"detail": "only staff may do this"})

CHANGES = {
    "demoted": ("UPDATE users SET is_staff = false WHERE id = $1", NOT_STAFF),
    "deactivated": ("UPDATE users SET is_active = false WHERE id = $1", REVOKED),
    "tokens revoked": (
        "UPDATE users SET token_generation = token_generation + 1 WHERE id = $1",
        TOKENS_REVOKED,
    ),
    "deleted": ("DELETE FROM users WHERE id = $1", REVOKED),
}


def test_publish_is_the_route_that_confirms_its_caller():
    assert publish.operation.confirms_caller


@pytest.mark.parametrize("change", CHANGES)
async def test_a_publisher_who_may_no_longer_publish_publishes_nothing(
    client: httpx.AsyncClient, world: World, conn, change: str
):
    statement, refused = CHANGES[change]
    good = {"message": "m", "tag": world.news}
    r = await client.post("/api/notifications/", json=good, headers=world.staff.headers)
    assert r.status_code == 201, r.text
    if change == "deleted":
        # Its notifications name it as their creator; they go first.
        await conn.execute("DELETE FROM notification WHERE created_by = $1", world.staff.id)
    await conn.execute(statement, world.staff.id)
    published = await conn.fetchval("SELECT count(*) FROM notification")
    bodies = [
        good,
        {"message": "m", "tag": world.news, "users": [world.bob.id]},
        {"message": "m", "tag": 10**9},  # no such tag
        {"tag": world.news},  # no message
        {"message": "m", "tag": world.news, "unknown": 1},
    ]
    for body in bodies:
        r = await client.post("/api/notifications/", json=body, headers=world.staff.headers)
        assert (r.status_code, r.json()) == refused, body
    r = await client.post("/api/notifications/", content=b"{not json", headers=world.staff.headers)
    assert (r.status_code, r.json()) == refused
    assert await conn.fetchval("SELECT count(*) FROM notification") == published


async def test_a_user_who_is_not_staff_is_told_so_before_anything_else(
    client: httpx.AsyncClient, world: World, conn
):
    published = await conn.fetchval("SELECT count(*) FROM notification")
    for body in ({"message": "m", "tag": world.news}, {"tag": world.news}, {"message": 1}):
        r = await client.post("/api/notifications/", json=body, headers=world.alice.headers)
        assert (r.status_code, r.json()) == NOT_STAFF, body
    assert await conn.fetchval("SELECT count(*) FROM notification") == published


async def test_only_a_staff_token_is_taken_at_its_word_and_no_ordinary_body_is_read(
    client: httpx.AsyncClient, world: World, conn
):
    for user, staff in ((world.staff, True), (world.alice, False)):
        r = await client.post(
            "/api/token/", json={"username": user.username, "password": user.password}
        )
        claims = jwt.decode(r.json()["access"], options={"verify_signature": False})
        assert claims.get("staff", False) is staff
    # An ordinary user's big body is refused for who sent it, not for its size.
    big = {"message": "m" * 90_000, "tag": world.news}
    r = await client.post("/api/notifications/", json=big, headers=world.alice.headers)
    assert (r.status_code, r.json()) == NOT_STAFF
    r = await client.post("/api/notifications/", json=big, headers=world.staff.headers)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("change", ["demoted", "deactivated", "tokens revoked"])
async def test_a_staff_token_refused_since_gets_its_answer_before_its_big_body_is_read(
    server, world: World, conn, change: str
):
    """A 900 KB body, of which only the first bytes are sent: the answer must
    come without the server waiting for the rest."""
    statement, refused = CHANGES[change]
    await conn.execute(statement, world.staff.id)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /api/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {world.staff.token}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n"
        + b'{"tag": 1, "message": "'
    )
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.split(b" ", 2)[1] == str(refused[0]).encode(), head


async def test_a_user_made_staff_publishes_with_the_token_they_had(
    client: httpx.AsyncClient, world: World, conn
):
    body = {"message": "m", "tag": world.news}
    r = await client.post("/api/notifications/", json=body, headers=world.alice.headers)
    assert r.status_code == 403
    await conn.execute("UPDATE users SET is_staff = true WHERE id = $1", world.alice.id)
    r = await client.post("/api/notifications/", json=body, headers=world.alice.headers)
    assert (r.status_code, r.json()["recipients"]) == (201, 2)
    actor = await conn.fetchval(
        "SELECT actor_id FROM audit_log WHERE resource = 'notification' AND object_id = $1",
        r.json()["id"],
    )
    assert actor == world.alice.id
