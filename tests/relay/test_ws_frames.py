"""Bad client frames get an error frame and the socket stays open; limits hold."""

from __future__ import annotations

import asyncio
import re

import pytest

from citelink.relay import frame_shapes
from tests.support import ROOT
from tests.support.data import publish, subscribe
from tests.support.wsclient import open_socket, serving


@pytest.mark.parametrize(
    ("frame", "code", "detail"),
    [
        ("not json", "invalid_json", "the frame is not valid JSON"),
        ("[1, 2]", "invalid", "expected a JSON object with a string 'type'"),
        ('{"id": 1}', "invalid", "expected a JSON object with a string 'type'"),
        ('{"type": 7}', "invalid", "expected a JSON object with a string 'type'"),
        ('{"type": "subscribe"}', "unknown_type", "unknown frame type 'subscribe'"),
        (b"\x00\x01", "unsupported", "binary frames are not supported; send JSON text"),
        ('{"type": "read"}', "invalid", "'id' must be an integer >= 1"),
        ('{"type": "read", "id": "1"}', "invalid", "'id' must be an integer >= 1"),
        ('{"type": "read", "id": true}', "invalid", "'id' must be an integer >= 1"),
        ('{"type": "unread", "id": 1.5}', "invalid", "'id' must be an integer >= 1"),
        ('{"type": "deleted", "id": -3}', "invalid", "'id' must be an integer >= 1"),
        ('{"type": "read", "id": 99999999999999999999}', "invalid", "'id' must be an integer >= 1"),
        ('{"type": "resume", "after": "x"}', "invalid", "'after' must be an integer >= 0"),
        ('{"type": "resume"}', "invalid", "'after' must be an integer >= 0"),
        ('{"type": "read_all", "tag": "news"}', "invalid", "'tag' must be an integer"),
        (
            '{"type": "notifications_list", "page": 0}',
            "invalid",
            "'page' must be an integer >= 1",
        ),
        (
            '{"type": "notifications_list", "page": 922337203685477582}',
            "page_too_deep",
            "numbered pages go 10,000 items deep; older items are listed with the cursor "
            "form {before, limit} (the citelink.v1 protocol)",
        ),
        (
            '{"type": "notifications_list", "page": 101, "page_size": 100}',
            "page_too_deep",
            "numbered pages go 10,000 items deep; older items are listed with the cursor "
            "form {before, limit} (the citelink.v1 protocol)",
        ),
        (
            '{"type": "notifications_list", "before": null, "limit": 1000}',
            "invalid",
            "at most 100 items per page",
        ),
        (
            '{"type": "notifications_list", "before": 10, "limit": 5, "status": "new"}',
            "invalid",
            "'status' must be one of: all, unseen, unread, read, archived",
        ),
    ],
)
async def test_bad_frame_gets_an_error_and_the_socket_stays_open(
    server, make_user, frame, code, detail
):
    alice = await make_user("alice")
    async with open_socket(server, alice.token) as ws:
        await ws.send_raw(frame)
        assert await ws.recv() == {"type": "error", "code": code, "detail": detail}
        assert await ws.request("ping") == {"type": "pong"}


async def test_another_users_item_is_indistinguishable_from_a_missing_one(server, conn, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await publish(conn, news, "for alice only")
    item = await conn.fetchval("SELECT id FROM user_notification WHERE user_id = $1", alice.id)

    async with open_socket(server, alice.token) as mine, open_socket(server, bob.token) as ws:
        answers = {}
        for kind in ("read", "unread", "deleted"):
            answers[kind] = [
                await ws.request(kind, id=item),
                await ws.request(kind, id=item + 1000),
            ]
        for theirs, missing in answers.values():
            assert (
                theirs
                == missing
                == {
                    "type": "error",
                    "code": "not_found",
                    "detail": "no such notification",
                }
            )
        listed = await ws.request("notifications_list", page=1, page_size=10)
        assert listed["data"] == [] and listed["total"] == 0
        assert await ws.request("resume", after=0) == {
            "type": "resumed",
            "count": 0,
            "last_id": 0,
        }
        # Alice's item is untouched and her socket heard of nothing.
        assert await mine.request("ping") == {"type": "pong"}
    row = await conn.fetchrow(
        "SELECT is_read, is_deleted FROM user_notification WHERE id = $1", item
    )
    assert dict(row) == {"is_read": False, "is_deleted": False}


async def test_frame_over_the_size_limit_closes_with_1009(server, make_user):
    alice = await make_user("alice")
    async with open_socket(server, alice.token) as ws:
        limit = server.server.config.ws_max_size
        await ws.send(type="ping", padding="x" * (limit - 100))
        assert await ws.recv() == {"type": "pong"}
        await ws.send(type="ping", padding="x" * limit)
        assert await ws.close_code() == 1009


async def test_frames_over_the_rate_limit_are_dropped_with_one_error(settings, make_user):
    alice = await make_user("alice")
    async with (
        serving(settings, ws_frames_per_second=5) as server,
        open_socket(server, alice.token) as ws,
    ):
        for _ in range(20):
            await ws.send(type="ping")
        frames = [await ws.recv() for _ in range(6)]
        assert frames == [{"type": "pong"}] * 5 + [
            {
                "type": "error",
                "code": "rate_limited",
                "detail": "too many frames; this one was dropped",
            }
        ]
        # The bucket refills at 5 frames a second.
        await asyncio.sleep(0.3)
        assert await ws.request("ping") == {"type": "pong"}


async def test_over_the_cap_the_oldest_socket_of_the_user_goes(settings, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    async with (
        serving(settings, ws_max_sockets_per_user=2) as server,
        open_socket(server, alice.token) as first,
        open_socket(server, alice.token) as second,
        open_socket(server, bob.token) as other,
    ):
        async with open_socket(server, alice.token) as third:
            assert await third.request("ping") == {"type": "pong"}
            assert await first.close_code() == 4409
            assert first.connection.close_reason == "replaced by a newer socket of this user"
            assert await second.request("ping") == {"type": "pong"}
        assert await other.request("ping") == {"type": "pong"}


def test_every_server_frame_has_a_type_and_a_schema():
    """frame_shapes declares each frame the WebSocket page lists; its JSON Schema has them all."""
    schema = frame_shapes.frame_schema()
    assert len(schema["anyOf"]) == len(set(frame_shapes.SERVER_FRAMES.values()))
    page = (ROOT / "docs" / "websocket.md").read_text()
    server_part = page.split("Server → client")[1].split("Client → server:")[0]
    listed = set(re.findall(r'`\{"type": "(\w+)"', server_part))
    assert listed == set(frame_shapes.SERVER_FRAMES)
