"""The database side of a publish, one version against another, in one run:
`python -m bench.publish_db [--against REV ...] [--seconds S]`.

Each version's sql/schema.sql and sql/triggers.sql (the working tree's, and
those of each git revision given) build a database of its own on one
embedded PostgreSQL, seeded alike by plain SQL; then the same client
measures them in turns, so a noisy machine shifts all of them alike:

- one committed `INSERT INTO notification` by plain SQL (asyncpg, no
  explicit transaction), to a tag of 0 and of 10 subscribers: the median;
- PostgreSQL CPU per 10-recipient publish: the CPU time of the server's
  processes (the backend and everything else, read from /proc) over a few
  thousand sequential publishes, divided by their number;
- throughput of 8 connections publishing at once, each to a tag of its own
  with 10 subscribers (no subscriber shared).

Only loopback, only this run's server; it is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import psycopg

from citelink.db import embedded
from citelink.db.connection import connect

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 400
CPU_PUBLISHES = 3000
CONNECTIONS = 8


def sql_of(revision: str | None) -> str:
    """schema.sql and triggers.sql of `revision` (None: the working tree)."""
    parts = []
    for name in ("sql/schema.sql", "sql/triggers.sql"):
        if revision is None:
            parts.append((ROOT / name).read_text())
        else:
            parts.append(
                subprocess.run(
                    ["git", "show", f"{revision}:{name}"],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
    return "\n".join(parts)


def with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}?{query}"


SEED = """
INSERT INTO users (username, password_hash) SELECT 'u' || g, 'x' FROM generate_series(1, 100) g;
INSERT INTO tag (name) VALUES ('nobody'), ('ten');
INSERT INTO tag (name) SELECT 'own' || k FROM generate_series(1, 8) k;
INSERT INTO subscription (user_id, tag_id) SELECT g, 2 FROM generate_series(1, 10) g;
INSERT INTO subscription (user_id, tag_id)
SELECT 10 + 10 * (k - 1) + g, 2 + k FROM generate_series(1, 8) k, generate_series(1, 10) g;
"""
PUBLISH = "INSERT INTO notification (tag_id, message) VALUES ($1, 'x')"
NOBODY, TEN = 1, 2
OWN_TAGS = list(range(3, 11))


def server_cpu_seconds(server_pid: int) -> float:
    """User and system CPU of PostgreSQL: the postmaster and all its children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == server_pid or ppid == server_pid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


async def median_ms(conn: asyncpg.Connection, tag: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await conn.execute(PUBLISH, tag)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def throughput(url: str, seconds: float) -> float:
    conns = [await connect(url) for _ in range(CONNECTIONS)]
    done = 0
    stop = time.monotonic() + seconds

    async def loop(conn: asyncpg.Connection, tag: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            await conn.execute(PUBLISH, tag)
            done += 1

    try:
        started = time.monotonic()
        await asyncio.gather(*(loop(c, t) for c, t in zip(conns, OWN_TAGS, strict=True)))
        return done / (time.monotonic() - started)
    finally:
        for conn in conns:
            await conn.close()


async def measure(urls: dict[str, str], server_pid: int, seconds: float) -> dict[str, dict]:
    results: dict[str, dict] = {
        name: {"p50_0": [], "p50_10": [], "cpu": [], "rate": []} for name in urls
    }
    conns = {name: await connect(url) for name, url in urls.items()}
    try:
        # Warm every connection's plans first.
        for conn in conns.values():
            await median_ms(conn, TEN, 50)
            await median_ms(conn, NOBODY, 50)
        for _ in range(3):  # turns: each version measured in every turn
            for name, conn in conns.items():
                r = results[name]
                r["p50_0"] += await median_ms(conn, NOBODY, ROUNDS // 3)
                r["p50_10"] += await median_ms(conn, TEN, ROUNDS // 3)
                before = server_cpu_seconds(server_pid)
                await median_ms(conn, TEN, CPU_PUBLISHES // 3)
                r["cpu"].append((server_cpu_seconds(server_pid) - before) / (CPU_PUBLISHES // 3))
                r["rate"].append(await throughput(urls[name], seconds / 3))
    finally:
        for conn in conns.values():
            await conn.close()
    return {
        name: {
            "insert_p50_ms_0": round(statistics.median(r["p50_0"]), 3),
            "insert_p50_ms_10": round(statistics.median(r["p50_10"]), 3),
            "server_cpu_ms_10": round(1000 * statistics.mean(r["cpu"]), 3),
            "per_s_8_connections": round(statistics.mean(r["rate"])),
        }
        for name, r in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", nargs="*", default=[], help="git revisions to compare")
    parser.add_argument("--seconds", type=float, default=6.0, help="of each throughput run")
    args = parser.parse_args()
    versions = {rev: sql_of(rev) for rev in args.against}
    versions["working tree"] = sql_of(None)
    data = Path(tempfile.mkdtemp(prefix="citelink-bench-db-"))
    try:
        base = embedded.start(data)
        urls = {}
        with psycopg.connect(base, autocommit=True) as conn:
            for k, (name, sql) in enumerate(versions.items()):
                db = f"bench_publish_{k}"
                conn.execute(f"DROP DATABASE IF EXISTS {db}")
                conn.execute(f"CREATE DATABASE {db}")
                url = with_database(base, db)
                with psycopg.connect(url, autocommit=True) as target:
                    target.execute(sql)
                    target.execute(SEED)
                    target.execute("VACUUM ANALYZE")
                urls[name] = url
        server_pid = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])
        results = asyncio.run(measure(urls, server_pid, args.seconds))
    finally:
        embedded.stop(data)
        subprocess.run(["rm", "-rf", str(data)], check=False)
    header = ["", *results]
    rows = [
        ("plain SQL insert, 0 subscribers, p50 ms", "insert_p50_ms_0"),
        ("plain SQL insert, 10 subscribers, p50 ms", "insert_p50_ms_10"),
        ("PostgreSQL CPU per 10-recipient publish, ms", "server_cpu_ms_10"),
        ("8 connections, 10 subscribers each, per s", "per_s_8_connections"),
    ]
    print(" | ".join(header))
    for label, key in rows:
        print(" | ".join([label, *(str(results[name][key]) for name in results)]))


if __name__ == "__main__":
    main()
