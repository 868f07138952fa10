"""`citelink serve --workers 2`: processes sharing one port, each with its own
LISTEN connection, metrics added up over them, one lost and replaced, all
stopped together."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import publish, subscribe
from tests.support.processes import Serve, citelink, citelink_serve
from tests.support.waiting import wait_until
from tests.support.wsclient import Socket, messages, open_socket

SCRAPER_TOKEN = "scraper-token-of-the-workers-test"
READY = re.compile(rb"worker (\d) ready \(pid (\d+)\)")


async def scrape(serve: Serve) -> list[tuple[str, dict[str, str], float]]:
    async with httpx.AsyncClient(base_url=serve.server.http) as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER_TOKEN}"})
    assert response.status_code == 200, response.text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


async def scrape_until(serve: Serve, done, within: float = 5.0):
    """Scrape until `done(figures)`: a worker that does not answer the scrape
    hands over its figures once a second."""
    deadline = time.monotonic() + within
    while not done(figures := await scrape(serve)):
        assert time.monotonic() < deadline, figures
        await asyncio.sleep(0.1)
    return figures


def by_pid(figures, name: str) -> dict[str, float]:
    return {labels["pid"]: value for n, labels, value in figures if n == name}


def total(figures, name: str, **labels: str) -> float:
    return sum(v for n, got, v in figures if n == name and labels.items() <= got.items())


async def worker_pids(serve: Serve, reports: int, within: float = 30) -> dict[int, int]:
    """Worker index -> pid, once `reports` workers have said they are ready
    (for an index reported twice, the replacement's)."""
    deadline = time.monotonic() + within
    while len(found := READY.findall(serve.output)) < reports:
        assert time.monotonic() < deadline, serve.output.decode()
        await asyncio.sleep(0.05)
    return {int(index): int(pid) for index, pid in found}


async def outcome(ws: Socket, message: str) -> str:
    """ "received" when `message` arrives, "closed" when the socket ends first."""
    try:
        assert messages(await ws.recv_until("counts")) == [message]
        return "received"
    except websockets.ConnectionClosed:
        return "closed"


async def test_workers_share_the_port_and_every_socket_gets_every_event(
    conn, db_url, tmp_path, make_user
):
    users = [await make_user(f"user{i}") for i in range(10)]
    news = 0
    for user in users:
        news = await subscribe(conn, user.id, "news")
    async with (
        citelink_serve(db_url, tmp_path, "--workers", "2", metrics_token=SCRAPER_TOKEN) as serve,
        AsyncExitStack() as stack,
    ):
        assert b"with 2 workers" in serve.output
        pids = await worker_pids(serve, 2)
        # 40 connections: SO_REUSEPORT spreads them over both workers.
        sockets = [
            await stack.enter_async_context(open_socket(serve.server, user.token))
            for user in users
            for _ in range(4)
        ]
        figures = await scrape_until(
            serve, lambda f: sum(by_pid(f, "citelink_sockets_open").values()) == 40
        )
        open_by_worker = by_pid(figures, "citelink_sockets_open")
        assert set(open_by_worker) == {str(pid) for pid in pids.values()}
        assert sum(open_by_worker.values()) == 40 and min(open_by_worker.values()) > 0
        assert by_pid(figures, "citelink_listener_up") == dict.fromkeys(open_by_worker, 1.0)
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        assert listening == 2

        await publish(conn, news, "to every worker")
        assert [await outcome(ws, "to every worker") for ws in sockets] == ["received"] * 40
        # Each worker hears all 10 events; each socket got a push and a count.
        # A worker may sample between hearing the events and sending the last
        # frames, so both are waited for.
        figures = await scrape_until(
            serve,
            lambda f: (
                total(f, "citelink_events_received_total", kind="new") >= 20
                and total(f, "citelink_ws_frames_sent_total") >= 80
            ),
        )
        assert total(figures, "citelink_events_received_total", kind="new") == 20
        assert total(figures, "citelink_ws_frames_sent_total") == 80

        # A worker dies: its sockets close, the other's keep going, and a new
        # worker takes its place on the same port.
        lost_index, lost_pid = next(iter(pids.items()))
        os.kill(lost_pid, signal.SIGKILL)
        await publish(conn, news, "after the loss")
        outcomes = [await outcome(ws, "after the loss") for ws in sockets]
        assert outcomes.count("closed") == open_by_worker[str(lost_pid)]
        assert outcomes.count("received") == 40 - open_by_worker[str(lost_pid)]
        replaced = await worker_pids(serve, 3)
        assert replaced[lost_index] != lost_pid
        assert f"worker {lost_index} (pid {lost_pid}) exited".encode() in serve.output
        async with open_socket(serve.server, users[0].token) as fresh:
            await publish(conn, news, "to the new one too")
            assert await outcome(fresh, "to the new one too") == "received"
        figures = await scrape(serve)
        assert str(lost_pid) not in by_pid(figures, "citelink_listener_up")

        # SIGTERM stops every worker gracefully: each socket hears 1001.
        serve.process.send_signal(signal.SIGTERM)
        alive = [ws for ws, result in zip(sockets, outcomes, strict=True) if result == "received"]
        assert {await ws.close_code(within=15) for ws in alive} == {1001}
        assert await asyncio.wait_for(serve.process.wait(), 20) == -signal.SIGTERM
    # The parent waited for its workers before it exited.
    assert [pid for pid in replaced.values() if running(pid)] == []


def running(pid: int) -> bool:
    """Whether `pid` runs (an exited process not yet reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_workers_stop_when_their_parent_is_killed(db_url, tmp_path):
    async with citelink_serve(db_url, tmp_path, "--workers", "2") as serve:
        pids = await worker_pids(serve, 2)
        metrics_dir = metrics_dir_of(pids[0])
        serve.process.kill()
        assert await asyncio.wait_for(serve.process.wait(), 10) == -signal.SIGKILL
        deadline = time.monotonic() + 15
        while alive := [pid for pid in pids.values() if running(pid)]:
            assert time.monotonic() < deadline, f"orphaned workers {alive}"
            await asyncio.sleep(0.05)
    # Nobody was left to remove it: a parent killed outright leaves it behind.
    shutil.rmtree(metrics_dir)


def metrics_dir_of(pid: int) -> str:
    """The PROMETHEUS_MULTIPROC_DIR that `serve` gave worker `pid`."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (found,) = [v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return found.split(b"=", 1)[1].decode()


# Slow (about 20 s): `pytest -m slow`.
@pytest.mark.slow
async def test_db_stop_under_two_workers_logs_each_change_once(own_postgres):
    """`citelink db-stop` under `serve --workers 2` on the embedded server: while
    it is down, each worker says so once (no traceback, no line per retry), and
    once more when it is back."""
    _, pgdata = own_postgres
    data_dir = Path(pgdata).parent
    env = os.environ | {"CITELINK_DATABASE_URL": "", "CITELINK_DATA_DIR": str(data_dir)}
    env["CITELINK_SECRET_KEY"] = SCRAPER_TOKEN * 2
    async with citelink_serve("", data_dir, "--workers", "2") as serve:
        await wait_until(lambda: b"createsuperuser" in serve.output, within=30)
        before = len(serve.output)
        stopped = await asyncio.to_thread(citelink, "db-stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        # Long enough for asyncpg's pool to retry 4 times, the listener 8 and
        # the scheduler 10.
        await asyncio.sleep(10)
        down = serve.output[before:].decode()
        started = await asyncio.to_thread(citelink, "db-url", env=env)
        assert started.returncode == 0, started.stderr
        await wait_until(lambda: serve.output.count(b"database available again") == 2, within=30)
        back = serve.output[before:].decode()
    assert "Traceback" not in back, back
    assert len(down.splitlines()) <= 4, down
    assert down.count("database unavailable") == 2, down
