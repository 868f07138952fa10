"""GET /metrics: who may read it, and what the figures say while the relay works.

The server runs in this process, so counters carry what earlier tests did:
each test compares figures before and after what it does.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import publish, subscribe
from tests.support.wsclient import StalledSocket, messages, open_socket, serving

SCRAPER_TOKEN = "scraper-token-of-this-test"

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient, token: str = SCRAPER_TOKEN) -> Figures:
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def figure(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


async def figures_until(http: httpx.AsyncClient, done, within: float = 5.0) -> Figures:
    """Scrape until `done(figures)`: the server handles a close after the client."""
    deadline = time.monotonic() + within
    while not done(figures := await scrape(http)):
        assert time.monotonic() < deadline, "the figures never got there"
        await asyncio.sleep(0.02)
    return figures


async def test_metrics_are_for_staff_and_the_scraper_only(settings, world):
    async with (
        serving(settings, metrics_token=SCRAPER_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        refused = await http.get("/metrics")
        assert (refused.status_code, refused.json()) == (
            401,
            {"detail": "authentication credentials were not provided"},
        )
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        alice = await http.get("/metrics", headers=world.alice.headers)
        assert alice.status_code == 403
        assert figure(await scrape(http, world.staff.token), "citelink_listener_up") == 1
        assert figure(await scrape(http), "citelink_listener_up") == 1
    # Without CITELINK_METRICS_TOKEN, only staff tokens open it.
    async with serving(settings) as server, httpx.AsyncClient(base_url=server.http) as http:
        scraper = {"Authorization": f"Bearer {SCRAPER_TOKEN}"}
        assert (await http.get("/metrics", headers=scraper)).status_code == 401
        assert figure(await scrape(http, world.staff.token), "citelink_pool_connections_max") == (
            settings.pool_size
        )


async def test_metrics_follow_sockets_events_and_publishes(settings, world):
    async with (
        serving(settings, metrics_token=SCRAPER_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        before = await scrape(http)
        async with open_socket(server, world.alice.token) as alice:
            async with open_socket(server, world.bob.token) as bob:
                async with open_socket(server, "not-a-token") as refused:
                    assert await refused.close_code() == 4401
                published = await http.post(
                    "/api/notifications/",
                    json={"message": "counted", "tag": world.news},
                    headers=world.staff.headers,
                )
                assert published.status_code == 201
                for ws in (alice, bob):
                    assert messages(await ws.recv_until("counts")) == ["counted"]
                during = await scrape(http)
            after = await figures_until(http, lambda f: figure(f, "citelink_sockets_open") == 1)

    def grew(name: str, then: Figures, now: Figures, **labels: str) -> float:
        return figure(now, name, **labels) - figure(then, name, **labels)

    assert figure(during, "citelink_sockets_open") == 2
    assert grew("citelink_events_received_total", before, during, kind="new") == 2
    # A notification and a count to each socket.
    assert grew("citelink_ws_frames_sent_total", before, during) == 4
    assert grew("citelink_publish_seconds_count", before, during) == 1
    assert figure(during, "citelink_publish_seconds_bucket", le="+Inf") == figure(
        during, "citelink_publish_seconds_count"
    )
    assert grew("citelink_sockets_closed_total", before, during, code="4401") == 1
    assert grew("citelink_sockets_closed_total", during, after, code="peer") == 1
    assert figure(during, "citelink_listener_up") == 1
    assert 0 <= figure(during, "citelink_notify_queue_usage_ratio") < 0.01
    assert 1 <= figure(during, "citelink_pool_connections_open") <= settings.pool_size


async def test_send_queue_depth_shows_a_client_falling_behind(settings, conn, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    async with (
        serving(settings, metrics_token=SCRAPER_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        slow = await StalledSocket.open(server, bob.token)
        async with open_socket(server, alice.token) as fast:
            padding = "\U0001f600" * 64_000  # 256 KB in 64,000 characters
            for i in range(48):  # 12 MB: more than the kernel buffers of one connection hold
                await publish(conn, news, f"{i} {padding}")
                await fast.recv_until("counts")
            figures = await scrape(http)
            assert figure(figures, "citelink_send_queue_longest_deliveries") >= 1
            assert figure(figures, "citelink_send_queue_deliveries") >= figure(
                figures, "citelink_send_queue_longest_deliveries"
            )
        await slow.close()


async def test_a_listener_reconnect_is_counted(settings, conn, world):
    async with (
        serving(settings, metrics_token=SCRAPER_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        before = figure(await scrape(http), "citelink_listener_reconnects_total")
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        assert killed == 1
        after = await figures_until(
            http,
            lambda f: (
                figure(f, "citelink_listener_reconnects_total") == before + 1
                and figure(f, "citelink_listener_up") == 1
            ),
        )
        assert figure(after, "citelink_listener_up") == 1
