"""CORS for the REST API and the socket's Origin check (citelink.identity.cors)."""

from __future__ import annotations

import os

import httpx
import pytest
import websockets

from citelink.problems import Problem
from citelink.settings import Settings
from tests.support.wsclient import open_socket, serving

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example"


def preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type"):
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture
async def cors_server(settings):
    async with serving(settings, cors_origins=(ALLOWED, "http://localhost:3000")) as server:
        yield server


async def test_preflight_from_an_allowed_origin(cors_server):
    async with httpx.AsyncClient(base_url=cors_server.http) as http:
        r = await http.options("/api/notifications/", headers=preflight(ALLOWED))
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    methods = r.headers["access-control-allow-methods"]
    assert {"GET", "POST", "PATCH", "DELETE"} <= {m.strip() for m in methods.split(",")}
    allowed_headers = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "Origin" in r.headers["vary"]


async def test_preflight_refusals_are_json(cors_server):
    async with httpx.AsyncClient(base_url=cors_server.http) as http:
        r = await http.options("/api/notifications/", headers=preflight(OTHER))
        assert (r.status_code, r.json()) == (403, {"detail": "origin not allowed"})
        assert "access-control-allow-origin" not in r.headers
        # An allowed origin asking for a header citelink does not take.
        r = await http.options("/api/tags/", headers=preflight(ALLOWED, headers="x-custom"))
        assert (r.status_code, r.json()) == (400, {"detail": "not allowed: headers"})


async def test_simple_requests_get_cors_headers_only_for_allowed_origins(cors_server, make_user):
    alice = await make_user("alice")
    async with httpx.AsyncClient(base_url=cors_server.http, headers=alice.headers) as http:
        allowed = await http.get("/api/inbox/counts/", headers={"Origin": ALLOWED})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert "Retry-After" in allowed.headers["access-control-expose-headers"]
        # Served, but without CORS headers: the browser keeps the answer from the page.
        refused = await http.get("/api/inbox/counts/", headers={"Origin": OTHER})
        assert refused.status_code == 200
        assert "access-control-allow-origin" not in refused.headers
        # Errors carry the headers too, so a page can read why.
        r = await http.get("/api/inbox/999/", headers={"Origin": ALLOWED})
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == ALLOWED


async def test_default_is_same_origin_only(server):
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.options("/api/token/", headers=preflight(ALLOWED))
        assert (r.status_code, r.json()) == (403, {"detail": "origin not allowed"})


async def test_socket_origin(cors_server, server, make_user):
    alice = await make_user("alice")

    async def opens(target, origin: str | None) -> bool:
        headers = {"Origin": origin} if origin else {}
        async with open_socket(target, alice.token, additional_headers=headers) as ws:
            try:
                return (await ws.request("ping"))["type"] == "pong"
            except websockets.ConnectionClosed:
                assert ws.connection.close_code == 4403
                assert ws.connection.close_reason == "origin not allowed"
                return False

    assert await opens(cors_server, ALLOWED)
    assert await opens(cors_server, "http://localhost:3000")
    assert await opens(cors_server, None)  # no browser, no Origin
    assert await opens(cors_server, cors_server.http)  # the service's own pages
    assert not await opens(cors_server, OTHER)
    assert not await opens(cors_server, "null")
    assert not await opens(server, ALLOWED)  # not listed on that server


def test_bad_origins_setting_is_one_line(monkeypatch):
    monkeypatch.setitem(os.environ, "CITELINK_CORS_ORIGINS", f"{ALLOWED}, https://x.example/path")
    with pytest.raises(Problem, match="no origin; give scheme://host"):
        Settings.from_env()
    monkeypatch.setitem(os.environ, "CITELINK_CORS_ORIGINS", f" {ALLOWED}/ ,HTTP://LOCALHOST:3000")
    assert Settings.from_env().cors_origins == (ALLOWED, "http://localhost:3000")
