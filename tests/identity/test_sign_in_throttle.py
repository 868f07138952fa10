"""Sign-in throttling: failed sign-ins per username, sign-ins per client
address (429 with Retry-After), and password hashes bounded by the cores
so that a flood of sign-ins does not grow the server's memory."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.attack import ATTACKER, BYSTANDER, Bystander, peak_rss_mib, rss_mib
from tests.support.processes import citelink_serve
from tests.support.world import World
from tests.support.wsclient import serving


def client_from(server, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=server.http, transport=transport, timeout=30)


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/token/", json={"username": username, "password": password})


async def test_failed_sign_ins_per_username_are_throttled(settings, world: World):
    async with (
        serving(settings, login_failures_per_user=3, login_attempts_per_client=0) as server,
        client_from(server, ATTACKER) as attacker,
        client_from(server, BYSTANDER) as other,
    ):
        for password in ("guess-1", "guess-2", "guess-3"):
            assert (await sign_in(attacker, "alice", password)).status_code == 401
        # The username is locked, whoever asks, in any case, with the right
        # password too: one more try in 60 / 3 = 20 s.
        for client, username, password in (
            (attacker, "alice", "guess-4"),
            (other, "ALICE", "secret-pw"),
        ):
            r = await sign_in(client, username, password)
            assert r.status_code == 429
            assert r.headers["retry-after"] == "20"
            assert r.json() == {"detail": "too many sign-in attempts; try again in 20 s"}
        # Others sign in; successful sign-ins are not counted.
        for _ in range(5):
            assert (await sign_in(other, "bob", "secret-pw")).status_code == 200
        # An unknown username is throttled just the same.
        for _ in range(3):
            assert (await sign_in(attacker, "nobody", "x")).status_code == 401
        assert (await sign_in(attacker, "nobody", "x")).status_code == 429


async def test_sign_ins_per_client_address_are_throttled(settings, world: World):
    """30 a minute: one every 2 s, at most 5 (10 seconds' worth) at once."""
    async with (
        serving(settings, login_attempts_per_client=30) as server,
        client_from(server, ATTACKER) as attacker,
        client_from(server, BYSTANDER) as other,
    ):
        answers = [
            (await sign_in(attacker, name, "x")).status_code
            for name in ("u1", "u2", "u3", "u4", "u5", "u6")
        ]
        assert answers == [401] * 5 + [429]
        # A forged X-Forwarded-For from a client that is no proxy changes nothing.
        r = await attacker.post(
            "/api/token/",
            json={"username": "alice", "password": "secret-pw"},
            headers={"X-Forwarded-For": "10.1.2.3"},
        )
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        # Another address signs in.
        assert (await sign_in(other, "alice", "secret-pw")).status_code == 200


async def test_the_bucket_refills(settings, world: World):
    """60 a minute from a client: 10 at once, then one a second."""
    async with (
        serving(settings, login_attempts_per_client=60, login_failures_per_user=0) as server,
        client_from(server, BYSTANDER) as client,
    ):
        tried = 0
        while (r := await sign_in(client, "nobody", "x")).status_code == 401:
            tried += 1
        assert tried >= 10 and r.headers["retry-after"] == "1"
        await asyncio.sleep(1.05)
        assert (await sign_in(client, "alice", "secret-pw")).status_code == 200
        assert (await sign_in(client, "alice", "secret-pw")).status_code == 429


async def flood(server, username: str, count: int, concurrency: int) -> dict[int, int]:
    """`count` failed sign-ins, `concurrency` at a time, each worker from an
    address of its own: statuses answered."""
    statuses: dict[int, int] = {}
    queue = list(range(count))

    async def worker(n: int) -> None:
        async with client_from(server, f"127.0.2.{n + 1}") as client:
            while queue:
                queue.pop()
                r = await sign_in(client, username, "no")
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return statuses


@pytest.mark.slow
async def test_a_flood_of_sign_ins_keeps_memory_flat(world: World, db_url, tmp_path, figure):
    """200 failed sign-ins, 40 at a time from 40 addresses, throttling off:
    hashes run one per core but one at most, so the server's memory stays
    flat; another user's requests are answered meanwhile."""
    unthrottled = {"login_failures_per_user": "0", "login_attempts_per_client": "0"}
    async with citelink_serve(db_url, tmp_path, **unthrottled) as serve:
        pid = serve.process.pid
        idle = rss_mib(pid)
        bystander = await Bystander.start(serve.server.http, world.alice.headers)
        started = time.monotonic()
        statuses = await flood(serve.server, "alice", 200, 40)
        took = time.monotonic() - started
        await bystander.stop()
        peak = peak_rss_mib(pid)
    figure(
        f"200 failed sign-ins, 40 at a time from 40 addresses, throttling off: {statuses} "
        f"in {took:.1f} s "
        f"({200 / took:.0f}/s); server RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB; "
        f"{bystander.summary()}"
    )
    assert statuses == {401: 200}
    assert peak - idle < 100
    assert bystander.failures == [] and set(bystander.statuses) == {200}
    assert bystander.p99_ms() <= 500


@pytest.mark.slow
async def test_a_flood_of_wrong_passwords_is_throttled(world: World, db_url, tmp_path, figure):
    """32 clients (on one address) posting wrong passwords for 5 s, with the
    default throttle: most get 429; alice signs in from elsewhere, and bob's
    requests are answered, meanwhile."""
    async with citelink_serve(db_url, tmp_path) as serve:
        stop = asyncio.Event()
        statuses: dict[int, int] = {}
        sign_in_times: list[float] = []

        async def attacker(n: int) -> None:
            async with client_from(serve.server, ATTACKER) as client:
                while not stop.is_set():
                    r = await sign_in(client, f"victim{n % 4}", "wrong")
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    # 320 attempts a second in all: the clients share the
                    # server's two cores, and must not take them from it.
                    await asyncio.sleep(0.1)

        async def alice() -> None:
            async with client_from(serve.server, "127.0.0.4") as client:
                while not stop.is_set():
                    started = time.monotonic()
                    r = await sign_in(client, "alice", "secret-pw")
                    assert r.status_code == 200
                    sign_in_times.append(time.monotonic() - started)
                    await asyncio.sleep(0.5)

        bystander = await Bystander.start(serve.server.http, world.bob.headers)
        tasks = [asyncio.create_task(attacker(n)) for n in range(32)]
        tasks.append(asyncio.create_task(alice()))
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*tasks)
        await bystander.stop()
    slowest = max(sign_in_times) * 1000
    figure(
        f"32 clients on one address posting wrong passwords for 5 s: {statuses}; alice's "
        f"{len(sign_in_times)} sign-ins meanwhile, slowest {slowest:.0f} ms; {bystander.summary()}"
    )
    # 5 at once, then one every 2 s.
    assert set(statuses) == {401, 429} and statuses[401] <= 10
    # alice waits for at most one of the attacker's hashes (a hash takes from
    # 15 ms on an idle core to a few hundred on a busy machine).
    assert slowest <= 2000
    assert bystander.failures == [] and set(bystander.statuses) == {200}
    assert bystander.p99_ms() <= 500
