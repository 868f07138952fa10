"""Would grouping concurrent publishes into one statement pay? `python -m bench.group_commit`.

The database alone (no app server), on a fresh embedded PostgreSQL with this
checkout's schema: 8 tags of 10 subscribers each (no subscriber shared), and
plain SQL through asyncpg, in turns that alternate:

- 8 connections, each inserting one notification per statement (one commit
  each), for a few seconds: what 8 publishers do today;
- one connection inserting 8 notifications per statement (one to each tag,
  a multi-row INSERT, one commit), and two such connections: what a batcher
  would send for 8 publishers;
- one notification per statement on one connection: the latency a publish
  would have alone;
- the first case again with `synchronous_commit = off` on those sessions
  (not durable, a diagnosis only): what the WAL flush at each commit costs.

Each row: notifications per second, PostgreSQL's CPU per notification (its
processes, from /proc), the statement's p50, and the share of the busy
backends' samples (pg_stat_activity, every 10 ms) spent waiting for the
lock PostgreSQL's NOTIFY holds from before a commit until it is flushed
(`Lock:object`). Only loopback, only this run's server, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import asyncpg

from .server import Seed, Server

ONE = "INSERT INTO notification (tag_id, message) VALUES ($1, 'x')"
MANY = "INSERT INTO notification (tag_id, message) SELECT t, 'x' FROM unnest($1::bigint[]) AS t"


NOT_DURABLE = "8 connections, 1 per statement, synchronous_commit off"


async def rate(
    server: Server,
    watcher: asyncpg.Connection,
    conns: list[asyncpg.Connection],
    work: list[tuple[str, object]],
    seconds: float,
) -> tuple[float, float, float, float]:
    """Notifications per second, PostgreSQL CPU ms per notification, the
    statement p50 (ms) and the share of busy samples waiting for NOTIFY's
    lock, with connection k running work[k] in a loop."""
    done, times = 0, []
    deadline = time.monotonic() + seconds
    busy, notify_lock = 0, 0

    async def watch() -> None:
        nonlocal busy, notify_lock
        while time.monotonic() < deadline:
            rows = await watcher.fetch(
                "SELECT wait_event_type = 'Lock' AND wait_event = 'object' AS waits "
                "FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            )
            busy += len(rows)
            notify_lock += sum(bool(r["waits"]) for r in rows)
            await asyncio.sleep(0.01)

    async def loop(conn: asyncpg.Connection, statement: str, arg: object) -> None:
        nonlocal done
        per = len(arg) if isinstance(arg, list) else 1
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await conn.execute(statement, arg)
            times.append((time.perf_counter() - started) * 1000)
            done += per

    cpu = server.postgres_cpu_seconds()
    started = time.monotonic()
    await asyncio.gather(*(loop(c, s, a) for c, (s, a) in zip(conns, work, strict=False)), watch())
    elapsed = time.monotonic() - started
    cpu = server.postgres_cpu_seconds() - cpu
    return done / elapsed, 1000 * cpu / done, statistics.median(times), notify_lock / max(busy, 1)


async def run(turns: int, seconds: float) -> dict[str, list[tuple[float, float, float]]]:
    server = Server()
    seed = await Seed.connect(server.database_url)
    try:
        users = await seed.users("group", 80)
        tags = [await seed.tag(f"group-{k}", users[10 * k : 10 * k + 10]) for k in range(8)]
        await seed.conn.execute("VACUUM ANALYZE")
        conns = [await seed.another_connection() for _ in range(8)]
        cases = {
            "8 connections, 1 notification per statement": [(ONE, t) for t in tags],
            "1 connection, 8 notifications per statement": [(MANY, tags)],
            "2 connections, 8 notifications per statement": [(MANY, tags)] * 2,
            "1 connection, 1 notification per statement": [(ONE, tags[0])],
            NOT_DURABLE: [(ONE, t) for t in tags],
        }
        results: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in cases}
        for work in cases.values():  # plans of every connection, first
            await rate(server, seed.conn, conns, work, 0.5)
        for turn in range(turns):
            names = list(cases)
            names = names[turn % len(names) :] + names[: turn % len(names)]
            for name in names:
                durable = "off" if name == NOT_DURABLE else "on"
                for conn in conns:
                    await conn.execute(f"SET synchronous_commit = {durable}")
                results[name].append(await rate(server, seed.conn, conns, cases[name], seconds))
        for conn in conns:
            await conn.close()
        return results
    finally:
        await seed.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="of each case per turn")
    args = parser.parse_args()
    results = asyncio.run(run(args.turns, args.seconds))
    print(
        "| case | notifications/s | PostgreSQL CPU per notification | statement p50 "
        "| busy samples waiting for NOTIFY's lock |"
    )
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        per_s, cpu, p50, waits = (statistics.median(r[k] for r in runs) for k in range(4))
        print(f"| {name} | {per_s:,.0f} | {cpu:.3f} ms | {p50:.2f} ms | {100 * waits:.0f} % |")


if __name__ == "__main__":
    main()
