"""citelink.client (the publishers' Python client) against a real server:
publishing to a tag and to external ids, tags, subscriptions, users, and
every error mapped to its type."""

from __future__ import annotations

import asyncio
import socket

import pytest

from citelink import client as cl
from tests.support.data import subscribe
from tests.support.wsclient import open_socket, serving


@pytest.fixture
async def api_key(client, make_user) -> str:
    staff = await make_user("admin", staff=True)
    r = await client.post("/api/keys/", json={"name": "shop"}, headers=staff.headers)
    return r.json()["key"]


async def test_async_client_publishes_to_tags_and_external_ids(server, api_key, conn, make_user):
    alice = await make_user("alice")
    async with cl.AsyncClient(server.http, api_key=api_key) as citelink:
        tag = await citelink.create_tag("orders")
        assert tag["name"] == "orders"
        assert [t["name"] for t in await citelink.tags()] == ["orders"]
        subscription = await citelink.subscribe("ext:42", tag["id"])
        await citelink.subscribe(alice.id, tag["id"])
        async with open_socket(server, alice.token) as ws:
            note = await citelink.publish("shipped", tag=tag["id"], data={"url": "/orders/7"})
            assert note["recipients"] == 2
            frames = await ws.recv_until("counts")
            assert [f["message"] for f in frames if f["type"] == "notification"] == ["shipped"]
        direct = await citelink.publish("just you", users=["ext:42", "ext:new"], priority="high")
        assert direct["recipients"] == 2
        user = await citelink.user("ext:42")
        assert (user["id"], user["external_id"]) == (subscription["user"], "42")
        assert [u["external_id"] for u in await citelink.users("42", "new")] == ["42", "new"]
        await citelink.unsubscribe("ext:42", tag["id"])
        with pytest.raises(cl.NotFound):
            await citelink.unsubscribe("ext:42", tag["id"])
    inbox = "SELECT array_agg(n.message ORDER BY n.id) FROM user_notification un JOIN notification n ON n.id = un.notification_id JOIN users u ON u.id = un.user_id WHERE u.external_id = $1"  # noqa: E501
    assert await conn.fetchval(inbox, "42") == ["shipped", "just you"]


async def test_sync_client_and_errors(server, api_key, make_user, conn):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")

    def work() -> dict:
        caught: dict = {}
        with cl.Client(server.http, api_key=api_key) as citelink:
            caught["published"] = citelink.publish("hi", tag=news)["recipients"]
            for name, call in {
                "invalid": lambda: citelink.publish("", tag=news),
                "unknown tag": lambda: citelink.publish("x", tag=999_999),
                "not found": lambda: citelink.delete_tag(999_999),
                "conflict": lambda: citelink.create_tag("news"),
                "duplicate": lambda: citelink.subscribe(alice.id, news),
            }.items():
                try:
                    call()
                except cl.CitelinkError as exc:
                    caught[name] = exc
        with cl.Client(server.http, api_key=api_key[:-2] + "xx") as wrong:
            try:
                wrong.tags()
            except cl.CitelinkError as exc:
                caught["bad key"] = exc
        with cl.Client(server.http, token=alice.token) as user:
            try:
                user.publish("x", tag=news)
            except cl.CitelinkError as exc:
                caught["not staff"] = exc
        return caught

    caught = await asyncio.to_thread(work)
    assert caught["published"] == 1
    assert (
        isinstance(caught["invalid"], cl.InvalidRequest) and "message" in caught["invalid"].errors
    )
    assert caught["unknown tag"].errors == {"tag": "no such tag"}
    assert isinstance(caught["not found"], cl.NotFound) and caught["not found"].status == 404
    assert isinstance(caught["conflict"], cl.Conflict)
    assert isinstance(caught["duplicate"], cl.Conflict)
    assert isinstance(caught["bad key"], cl.AuthenticationError)
    assert caught["bad key"].detail == "API key is invalid"
    assert isinstance(caught["not staff"], cl.PermissionDenied)
    with pytest.raises(ValueError):
        cl.Client(server.http, api_key=api_key, token=alice.token)


async def test_rate_limits_and_unreachable_servers(settings, api_key):
    async with (
        serving(settings, login_attempts_per_client=1) as server,
        cl.AsyncClient(server.http, api_key=api_key) as citelink,
    ):
        # Sign-ins are what citelink throttles; the client maps any 429 alike.
        sign_in = {"username": "nobody", "password": "x"}
        with pytest.raises(cl.AuthenticationError):
            await citelink._call("POST", "/api/token/", json=sign_in)
        with pytest.raises(cl.RateLimited) as limited:
            await citelink._call("POST", "/api/token/", json=sign_in)
        assert limited.value.retry_after and limited.value.retry_after > 0
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    async with cl.AsyncClient(f"http://127.0.0.1:{port}", api_key=api_key, timeout=2) as gone:
        with pytest.raises(cl.Unavailable):
            await gone.tags()
    with pytest.raises(cl.Unavailable), cl.Client(f"http://127.0.0.1:{port}") as sync_gone:
        sync_gone.tags()
