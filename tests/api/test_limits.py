"""Every cap follows its setting: at the cap, accepted; one past it, a clear 4xx
or close code. (Sockets per user, frames per second and subscriptions per
user are tested with their own settings in test_ws_frames.py and
test_api_resources.py.)"""

from __future__ import annotations

import httpx
import orjson

from tests.support.world import World
from tests.support.wsclient import open_socket, serving

CAPS = {
    "max_body_bytes": 2048,
    "max_message_chars": 64,
    "max_page_size": 5,
    "ws_max_frame_bytes": 4096,
}


def notification(tag: int, message: str, size: int | None = None) -> bytes:
    """A publish body, padded (in `data`) to exactly `size` bytes if given."""
    body = orjson.dumps({"message": message, "tag": tag, "data": {"pad": ""}})
    if size is not None:
        body = body.replace(b'"pad":""', b'"pad":"' + b"x" * (size - len(body)) + b'"')
        assert len(body) == size
    return body


async def test_configured_limits_hold(settings, world: World):
    staff = world.staff.headers
    async with (
        serving(settings, **CAPS) as server,
        httpx.AsyncClient(base_url=server.http) as client,
    ):

        async def post(body: bytes) -> httpx.Response:
            return await client.post("/api/notifications/", content=body, headers=staff)

        # Request body.
        assert (await post(notification(world.news, "m", size=2048))).status_code == 201
        r = await post(notification(world.news, "m", size=2049))
        assert r.status_code == 413
        assert r.json() == {"detail": "request body larger than 2048 bytes"}

        # Message length.
        assert (await post(notification(world.news, "é" * 64))).status_code == 201
        r = await post(notification(world.news, "é" * 65))
        assert r.status_code == 422
        assert r.json()["errors"] == {"message": "at most 64 characters"}

        # Page size, REST and WebSocket (both forms).
        r = await client.get("/api/inbox/?limit=5", headers=world.alice.headers)
        assert r.status_code == 200
        r = await client.get("/api/inbox/?limit=6", headers=world.alice.headers)
        assert r.status_code == 422
        assert r.json()["errors"] == {"limit": "must be between 1 and 5"}
        async with open_socket(server, world.alice.token) as ws:
            listed = await ws.request("notifications_list", page=1, page_size=5)
            assert listed["type"] == "notifications_list"
            too_many = {"type": "error", "code": "invalid", "detail": "at most 5 items per page"}
            assert await ws.request("notifications_list", before=None, limit=6) == too_many
            # The seed's numbered pages are cut to the largest size instead.
            for i in range(4):
                assert (await post(notification(world.news, f"more {i}"))).status_code == 201
            await ws.until_message("more 3")
            await ws.recv_until("counts")
            clamped = await ws.request("notifications_list", page=1, page_size=100)
            assert clamped["total"] > 5 and len(clamped["data"]) == 5
            assert clamped["total_pages"] == -(-clamped["total"] // 5)

            # Frame size: the frame below is 4096 bytes; one byte more closes.
            frame = {"type": "ping", "pad": ""}
            frame["pad"] = "x" * (4096 - len(orjson.dumps(frame)))
            await ws.send_raw(orjson.dumps(frame).decode())
            assert await ws.recv() == {"type": "pong"}
            frame["pad"] += "x"
            await ws.send_raw(orjson.dumps(frame).decode())
            assert await ws.close_code() == 1009

        # The published description says the same.
        doc = (await client.get("/openapi.json")).json()
        publish = doc["paths"]["/api/notifications/"]["post"]["requestBody"]["content"]
        schema = publish["application/json"]["schema"]
        assert schema["properties"]["message"]["maxLength"] == 64
        inbox = doc["paths"]["/api/inbox/"]["get"]["parameters"]
        assert next(p for p in inbox if p["name"] == "limit")["schema"]["maximum"] == 5
