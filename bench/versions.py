"""Versions side by side, in one run: `python -m bench.versions --against REV ...`.

Every git revision given (its tree, unpacked by `git archive`) and this
checkout ("after") run their own `citelink serve` on their own fresh embedded
PostgreSQL, seeded alike by SQL. The same clients measure them in turns, the
order of the versions rotating from turn to turn, so that a noisy machine
shifts all of them alike. Groups (all by default):

- sql: plain SQL through asyncpg while no app server runs: one committed
  `INSERT INTO notification` to a tag of 0 and of 10 subscribers (p50);
  PostgreSQL's CPU (its processes, from /proc) per 10-recipient insert; 8
  connections inserting at once, each to its own tag of 10.
- requests: sequential requests to a server without sockets: GET /healthz,
  GET /api/users/me/, POST /api/notifications/ to 0 and to 10 subscribers
  (p50, and the server's and PostgreSQL's CPU per request).
- sockets: on a freshly started server, with every online user holding a
  socket (two client processes): the first three fan-outs to 1,000, then
  three warm ones; one POST to 10 connected subscribers (p50); fan-out to
  4,000 and 10,000; latency (50 sockets, 200 POSTs 20 ms apart); 8 HTTP
  publishers on one tag of 10 and on a tag of 10 each; a 100,000-subscriber
  broadcast (1,000 connected) and head-of-line behind it.
- latency: the latency row of `sockets` alone, on a freshly started server
  with every online user holding a socket (nothing published before it).
- workers: 8 HTTP publishers on one tag of 10 with `serve --workers 1`, then
  `--workers 2` (each turn in the other order), for versions that have it.

Medians over turns (or over all samples for p50 rows); JSON to bench-results/.
Only loopback, only this run's servers; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import scenarios
from .clients import ClientProcess
from .scenarios import Fleet, Publisher, http_client, post_json
from .server import Seed, Server

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ["sql", "requests", "sockets", "latency", "workers"]
INSERT = "INSERT INTO notification (tag_id, message) VALUES ($1, 'x')"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def unpack(revision: str, into: Path) -> Path:
    """The tree of `revision` under `into`; its `src/` directory."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def package_of(server: Server) -> str:
    """Where the `citelink` that this server runs is imported from."""
    return subprocess.run(
        [sys.executable, "-c", "import citelink; print(citelink.__file__)"],
        env=server.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@dataclass
class Sizes:
    online: int = 10_000
    big: int = 100_000
    fan_out: tuple[int, ...] = (4_000, 10_000)
    requests: int = 100
    cpu_inserts: int = 1_000
    seconds: float = 8.0


@dataclass
class Version:
    name: str
    server: Server
    seed: Seed
    staff: int = 0
    online: list[int] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)
    parallel: list[int] = field(default_factory=list)
    results: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.results.setdefault(key, []).append(value)

    def extend(self, key: str, values: list[float]) -> None:
        self.results.setdefault(key, []).extend(values)


async def prepare(name: str, source: Path | None, sizes: Sizes) -> Version:
    server = Server(src=source)
    where = package_of(server)
    log(f"{name}: citelink from {where}")
    if source is not None and not where.startswith(str(source)):
        raise RuntimeError(f"{name} would run {where}, not the code under {source}")
    seed = await Seed.connect(server.database_url)
    version = Version(name, server, seed)
    ids = await seed.users("bench", sizes.online + sizes.big - 1_000)
    version.staff, online = ids[0], ids[: sizes.online]
    version.online = online
    tags = version.tags
    tags["nobody"] = await seed.tag("nobody", [])
    tags["ten"] = await seed.tag("ten", online[10:20])
    tags["latency"] = await seed.tag("latency", online[:50])
    for n in (1_000, *sizes.fan_out):
        tags[f"fan-out-{n}"] = await seed.tag(f"fan-out-{n}", online[:n])
    # The broadcast's connected subscribers are the first 1,000; the next
    # user is alone on a tag of their own (head-of-line).
    tags["big"] = await seed.tag("big", online[:1_000] + ids[sizes.online :])
    tags["single"] = await seed.tag("single", [online[1_000]])
    version.parallel = [
        await seed.tag(f"parallel-{k}", online[100 + 10 * k : 110 + 10 * k]) for k in range(8)
    ]
    await seed.conn.execute("VACUUM ANALYZE")
    return version


def rotation(versions: list[Version], turn: int) -> list[Version]:
    k = turn % len(versions)
    return versions[k:] + versions[:k]


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Milliseconds of `count` calls, one after another."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


# sql -----------------------------------------------------------------------


async def sql_turn(version: Version, sizes: Sizes) -> None:
    conn, tags = version.seed.conn, version.tags
    await timed(lambda: conn.execute(INSERT, tags["ten"]), 50)  # this turn's plans
    version.extend("sql_p50_0", await timed(lambda: conn.execute(INSERT, tags["nobody"]), 200))
    version.extend("sql_p50_10", await timed(lambda: conn.execute(INSERT, tags["ten"]), 200))
    before = version.server.postgres_cpu_seconds()
    await timed(lambda: conn.execute(INSERT, tags["ten"]), sizes.cpu_inserts)
    cpu = version.server.postgres_cpu_seconds() - before
    version.add("sql_pg_cpu_ms_10", 1000 * cpu / sizes.cpu_inserts)
    conns = [await version.seed.another_connection() for _ in version.parallel]
    done = 0
    deadline = time.monotonic() + sizes.seconds

    async def loop(c: Any, tag: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await c.execute(INSERT, tag)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(c, t) for c, t in zip(conns, version.parallel, strict=True)))
    version.add("sql_8_connections_per_s", done / (time.monotonic() - started))
    for c in conns:
        await c.close()


# requests --------------------------------------------------------------------


REQUESTS = ["healthz", "me", "post_0", "post_10"]


async def requests_turn(versions: list[Version], sizes: Sizes) -> None:
    """Each kind of request, `sizes.requests` of them, on each version in
    turn, so that the versions alternate every few hundred milliseconds."""
    sessions = [http_client(v.server.http, v.server.token(v.staff, staff=True)) for v in versions]
    try:
        for kind in REQUESTS:
            for version, http in zip(versions, sessions, strict=True):
                call = request(http, version.tags, kind)
                server = version.server
                await timed(call, 10)
                cpu, pg = server.cpu_seconds(), server.postgres_cpu_seconds()
                version.extend(f"{kind}_ms", await timed(call, sizes.requests))
                count = sizes.requests / 1000  # CPU per request in ms
                version.add(f"{kind}_server_cpu_ms", (server.cpu_seconds() - cpu) / count)
                version.add(f"{kind}_pg_cpu_ms", (server.postgres_cpu_seconds() - pg) / count)
    finally:
        for http in sessions:
            await http.close()


def request(http: Any, tags: dict[str, int], kind: str) -> Callable[[], Awaitable[None]]:
    async def get(path: str) -> None:
        async with http.get(path) as response:
            await response.read()
            assert response.status == 200, path

    async def publish(tag: int) -> None:
        status, body = await post_json(http, "/api/notifications/", {"message": "x", "tag": tag})
        assert status == 201, body

    return {
        "healthz": lambda: get("/healthz"),
        "me": lambda: get("/api/users/me/"),
        "post_0": lambda: publish(tags["nobody"]),
        "post_10": lambda: publish(tags["ten"]),
    }[kind]


# sockets ---------------------------------------------------------------------


@asynccontextmanager
async def connected(version: Version, clients: int) -> AsyncIterator[tuple[Fleet, Publisher]]:
    """The version's server freshly started, every online user holding a
    socket (`clients` processes), and a publisher."""
    server = version.server
    server.stop()
    server.start()
    log(f"{version.name}: connecting {len(version.online):,} sockets")
    fleet = Fleet(
        [
            ClientProcess(server.ws, [server.token(u) for u in version.online[k::clients]])
            for k in range(clients)
        ]
    )
    publisher = Publisher(server, version.staff)
    try:
        for client in fleet.clients:
            client.wait_ready()
        yield fleet, publisher
    finally:
        await publisher.close()
        for client in fleet.clients:
            client.close()


async def sockets_turn(version: Version, sizes: Sizes, clients: int) -> None:
    server, tags = version.server, version.tags
    async with connected(version, clients) as (fleet, publisher):
        fresh = await scenarios.fan_out(fleet, publisher, tags["fan-out-1000"], 1_000)
        version.add("fresh_1000_runs_ms", fresh["runs_last_socket_ms"])
        for _ in range(20):  # every pooled connection in use has published by now
            await publisher.post(tags["ten"], "warm-up")
        warm = await scenarios.fan_out(fleet, publisher, tags["fan-out-1000"], 1_000)
        version.add("warm_1000_ms", warm["last_socket_ms"])
        version.add("warm_1000_commit_ms", warm["commit_ms"])
        single = await timed(lambda: publisher.post(tags["ten"], "single"), 200)
        version.extend("post_10_connected_ms", single)
        for n in sizes.fan_out:
            result = await scenarios.fan_out(fleet, publisher, tags[f"fan-out-{n}"], n)
            version.add(f"fan_out_{n}_ms", result["last_socket_ms"])
            version.add(f"fan_out_{n}_commit_ms", result["commit_ms"])
            assert result["received"] == n, result
        latency = await scenarios.latency(fleet, publisher, tags["latency"], 50, 200, 0.02)
        version.extend("latency_samples_ms", latency["samples_ms"])
        version.add("latency_lost", latency["lost"])
        throughput = await scenarios.publish_throughput(
            fleet, server, version.staff, tags["ten"], 10, seconds=sizes.seconds
        )
        version.add("throughput_per_s", throughput["notifications_per_s"])
        parallel = await scenarios.parallel_publishers(
            fleet, server, version.staff, version.parallel, 10, seconds=sizes.seconds
        )
        version.add("parallel_per_s", parallel["notifications_per_s"])
        big = await scenarios.big_fan_out(fleet, publisher, tags["big"], sizes.big, 1_000)
        version.add("big_commit_ms", big["commit_ms"])
        version.add("big_last_socket_ms", big["last_socket_ms"])
        hol = await scenarios.head_of_line(fleet, publisher, tags["big"], tags["single"], 1_000, 3)
        version.extend("head_of_line_ms", hol["single_push_runs_ms"])


async def latency_turn(version: Version, clients: int) -> None:
    async with connected(version, clients) as (fleet, publisher):
        latency = await scenarios.latency(fleet, publisher, version.tags["latency"], 50, 200, 0.02)
        version.extend("alone_latency_samples_ms", latency["samples_ms"])
        version.add("alone_latency_p99_ms", latency["p99_ms"])


# workers ---------------------------------------------------------------------


def has_workers(server: Server) -> bool:
    usage = subprocess.run(
        [sys.executable, "-m", "citelink.cli", "serve", "--help"],
        env=server.env,
        capture_output=True,
        text=True,
    ).stdout
    return "--workers" in usage


async def workers_turn(version: Version, sizes: Sizes, counts: list[int]) -> None:
    server = version.server
    subscribers = version.online[10:20]
    for count in counts:
        server.stop()
        server.start(workers=count)
        fleet = Fleet([ClientProcess(server.ws, [server.token(u) for u in subscribers])])
        try:
            fleet.clients[0].wait_ready()
            await asyncio.sleep(1)
            result = await scenarios.publish_throughput(
                fleet, server, version.staff, version.tags["ten"], 10, seconds=sizes.seconds
            )
        finally:
            fleet.clients[0].close()
        published = result["notifications_per_s"] * sizes.seconds
        version.add(f"workers_{count}_per_s", result["notifications_per_s"])
        version.add(
            f"workers_{count}_server_cpu_ms",
            1000 * result["server_cpu_cores"] * sizes.seconds / published,
        )
        version.add(f"workers_{count}_deliveries_per_s", result["deliveries_per_s"])
    server.stop()


# the table -------------------------------------------------------------------


def p50(values: list[float]) -> float:
    return scenarios.percentile(values, 0.5)


def p99(values: list[float]) -> float:
    return scenarios.percentile(values, 0.99)


median = statistics.median
# How a row sums up its values (None: each turn's runs as measured).
Summary = Callable[[list[Any]], Any] | None
ROWS: list[tuple[str, str, Summary]] = [
    ("8 HTTP publishers, one tag of 10 subscribers, per s", "throughput_per_s", median),
    ("8 HTTP publishers, own tag of 10 each, per s", "parallel_per_s", median),
    ("one POST, 10 connected subscribers, p50 ms", "post_10_connected_ms", median),
    ("plain SQL insert, 10 subscribers, p50 ms", "sql_p50_10", median),
    ("plain SQL insert, 0 subscribers, p50 ms", "sql_p50_0", median),
    ("plain SQL, 8 connections, 10 subscribers each, per s", "sql_8_connections_per_s", median),
    ("PostgreSQL CPU per 10-recipient SQL insert, ms", "sql_pg_cpu_ms_10", median),
    ("fan-out N=1,000 warm, POST -> last socket, ms", "warm_1000_ms", median),
    ("fan-out N=1,000, first three on a fresh server, ms", "fresh_1000_runs_ms", None),
    ("fan-out N=4,000, ms", "fan_out_4000_ms", median),
    ("fan-out N=10,000, ms", "fan_out_10000_ms", median),
    ("100,000 subscribers: commit, ms", "big_commit_ms", median),
    ("latency p50 (50 sockets, 200 POSTs 20 ms apart), ms", "latency_samples_ms", p50),
    ("latency p99, ms", "latency_samples_ms", p99),
    ("latency alone: p50 of all samples, ms", "alone_latency_samples_ms", p50),
    ("latency alone: p99 of all samples, ms", "alone_latency_samples_ms", p99),
    ("latency alone: each turn's p99, median, ms", "alone_latency_p99_ms", median),
    ("head-of-line behind a 100,000 broadcast, p50 ms", "head_of_line_ms", median),
    ("head-of-line, worst, ms", "head_of_line_ms", max),
    ("GET /healthz p50 ms", "healthz_ms", median),
    ("GET /api/users/me/ p50 ms", "me_ms", median),
    ("POST, 0 subscribers, p50 ms", "post_0_ms", median),
    ("POST, 10 subscribers (no sockets), p50 ms", "post_10_ms", median),
    ("server CPU per POST, 10 subscribers, ms", "post_10_server_cpu_ms", median),
    ("PostgreSQL CPU per POST, 10 subscribers, ms", "post_10_pg_cpu_ms", median),
    ("server CPU per POST, 0 subscribers, ms", "post_0_server_cpu_ms", median),
    ("server CPU per GET /api/users/me/, ms", "me_server_cpu_ms", median),
    ("server CPU per GET /healthz, ms", "healthz_server_cpu_ms", median),
    ("--workers 1: 8 publishers, one tag of 10, per s", "workers_1_per_s", median),
    ("--workers 2: the same, per s", "workers_2_per_s", median),
    ("--workers 1: server CPU per notification, ms", "workers_1_server_cpu_ms", median),
    ("--workers 2: server CPU per notification, ms", "workers_2_server_cpu_ms", median),
]


def cell(results: dict[str, list[Any]], key: str, summary: Summary) -> str:
    values = results.get(key)
    if not values:
        return "-"
    if summary is None:  # the turns' runs, each as measured
        return " / ".join(", ".join(f"{x:.0f}" for x in runs) for runs in values)
    value = summary(values)
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(versions: list[Version]) -> str:
    lines = ["| | " + " | ".join(v.name for v in versions) + " |"]
    lines.append("|---" * (len(versions) + 1) + "|")
    for label, key, summary in ROWS:
        cells = [cell(v.results, key, summary) for v in versions]
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(args: argparse.Namespace, tmp: Path) -> list[Version]:
    sizes = Sizes()
    if args.quick:
        sizes = Sizes(online=1_100, big=10_000, fan_out=(), requests=50, cpu_inserts=300, seconds=3)
    if args.requests:
        sizes.requests = args.requests
    only = set(args.only or GROUPS)
    versions: list[Version] = []
    try:
        for revision in args.against:
            log(f"{revision}: unpacking and seeding")
            versions.append(await prepare(revision, unpack(revision, tmp / revision), sizes))
        log("after (this checkout): seeding")
        versions.append(await prepare("after", None, sizes))
        for turn in range(args.turns):
            if "sql" in only:
                for version in rotation(versions, turn):
                    log(f"turn {turn + 1}, sql: {version.name}")
                    await sql_turn(version, sizes)
        if only & {"requests", "sockets", "latency"}:
            for version in versions:
                version.server.start()
        for turn in range(args.turns):
            if "requests" in only:
                log(f"turn {turn + 1}, requests")
                await requests_turn(rotation(versions, turn), sizes)
        for turn in range(args.turns):
            if "sockets" in only:
                for version in rotation(versions, turn):
                    log(f"turn {turn + 1}, sockets: {version.name}")
                    await sockets_turn(version, sizes, args.clients)
        for turn in range(args.turns):
            if "latency" in only:
                for version in rotation(versions, turn):
                    log(f"turn {turn + 1}, latency: {version.name}")
                    await latency_turn(version, args.clients)
        for version in versions:
            version.server.stop()
        if "workers" in only:
            able = [v for v in versions if has_workers(v.server)]
            for turn in range(args.turns):
                for version in rotation(able, turn):
                    counts = [1, 2] if turn % 2 == 0 else [2, 1]
                    log(f"turn {turn + 1}, workers {counts}: {version.name}")
                    await workers_turn(version, sizes, counts)
    finally:
        for version in versions:
            await version.seed.close()
            version.server.close()
    return versions


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.versions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--against", nargs="*", default=[], help="git revisions to compare")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="these groups only")
    parser.add_argument("--turns", type=int, default=3, help="turns of each group (default 3)")
    parser.add_argument("--clients", type=int, default=2, help="socket client processes")
    parser.add_argument("--requests", type=int, help="of each kind per turn (default 100)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--output", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citelink-versions-") as tmp:
        versions = asyncio.run(run(args, Path(tmp)))
    print(table(versions))
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"versions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(
        orjson.dumps({v.name: v.results for v in versions}, option=orjson.OPT_INDENT_2)
    )
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
