"""Before and after: issue 23's attacks ("no user, row or feature can take the
service from the others") against an older commit and against this tree.

    python -m bench.attacks --against a4c0a86 [--old-tree DIR] [--only NAME ...] [--rounds N]

The older commit is served from a checkout of its own, put first on
PYTHONPATH (`git worktree add ../old-a4c0a86-attacks a4c0a86`; --old-tree,
by default that directory). For each attack, each version runs on a fresh
embedded database, one version after the other, alternating which goes
first: `citelink serve`, data seeded by plain SQL, another user
(bench/victim.py, a process of its own) measured while the attack runs for a
bounded time (under a minute), then the figures: what the attacker got, the
victim's statuses and latencies, its pushes, deadlocks
(pg_stat_database.deadlocks), audit rows and bytes (audit_log's size) and
the server process's RSS and CPU time (/proc). One Markdown table is
printed; the figures also go to bench-results/ as JSON.

Some attacks cannot be sent as they are to this tree: a user's request body
is at most 64 KiB, a `data` filter 1,024 bytes and 16 values an array,
numbered seed pages go 10,000 items deep, and an unknown listed user is
refused at insert. There the attacker counts the refusals and then sends
the nearest thing accepted (the same shape at the filter's bounds, the
deepest page allowed); the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from .server import Seed, Server

ROOT = Path(__file__).resolve().parent.parent
ATTACKER = "127.0.0.2"  # the victim's requests come from 127.0.0.3
NOBODY = 999_999_999  # a user id that does not exist

# The filter: a page of 5,000 items took 60 s with it (879 KiB).
HOSTILE = {"actions": [{}] * 300_000 + [{"id": "x"}]}
# The same in a socket frame, under the 64 KiB frame limit (58 KiB).
HOSTILE_FRAME = {"actions": [{}] * 19_700 + [{"id": "x"}]}
# The same shape at this tree's bounds: 16 values in an array.
BOUNDED = {"actions": [{}] * 15 + [{"id": "x"}]}
# What the attacker's items carry: each is compared with the filter.
ACTIONS = {"actions": [{"id": "open", "label": "Open"}]}
# The service's own limits on sockets (bench.server.Server lifts them for
# the other benchmarks), the same in both versions.
DEFAULTS = {"CITELINK_WS_MAX_SOCKETS_PER_USER": "20", "CITELINK_WS_FRAMES_PER_SECOND": "50"}
# The attacker's sockets send 45 frames a second together, within the limit
# of a user's sockets (50): a frame over it is dropped without an answer.
FRAME_INTERVAL = 1 / 45


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Version:
    label: str  # "before" or "after"
    commit: str
    src: Path | None  # the checkout's src/ put first on PYTHONPATH; None: this tree


@dataclass
class World:
    """One version's server and database, and the users of every attack: the
    attacker (an ordinary user, subscribed to tag `mine`), the victim (to tag
    `theirs`), the staff user who publishes to the victim, and a staff user
    of the attack's own."""

    version: Version
    server: Server
    seed: Seed
    attacker: int = 0
    victim: int = 0
    publisher: int = 0
    staff: int = 0
    mine: int = 0
    theirs: int = 0
    victim_patch: int | None = None  # the victim PATCHes this item instead of reading counts
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> asyncpg.Connection:
        return self.seed.conn

    def headers(self, user: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.token(user)}"}

    async def users(self, prefix: str, count: int, *, staff: bool = False) -> list[int]:
        rows = await self.db.fetch(
            "INSERT INTO users (username, password_hash, is_staff) "
            "SELECT $1 || g, 'x', $3 FROM generate_series(1, $2) g RETURNING id",
            prefix,
            count,
            staff,
        )
        return [r["id"] for r in rows]


async def make_world(version: Version, server: Server, seed: Seed) -> World:
    world = World(version, server, seed)
    (world.attacker,) = await world.users("attacker", 1)
    (world.victim,) = await world.users("victim", 1)
    (world.publisher,) = await world.users("publisher", 1, staff=True)
    (world.staff,) = await world.users("staff", 1, staff=True)
    world.mine = await seed.tag("mine", [world.attacker])
    world.theirs = await seed.tag("theirs", [world.victim])
    return world


@dataclass
class Outcome:
    """What an attack saw on one version: what the attacker got, figures of
    its own (label -> text), and scheduled pushes to time (message -> when
    due, wall clock)."""

    attacker: str
    notes: dict[str, str] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)


@dataclass
class Attack:
    name: str
    title: str
    run: Callable[[World], Awaitable[Outcome]]
    prepare: Callable[[World], Awaitable[None]] | None
    env: dict[str, str]


ATTACKS: list[Attack] = []


def attack(
    title: str,
    prepare: Callable[[World], Awaitable[None]] | None = None,
    env: dict[str, str] | None = None,
) -> Callable[[Callable[[World], Awaitable[Outcome]]], Callable[[World], Awaitable[Outcome]]]:
    """Register an attack (by its function's name), in the table's order."""

    def register(run: Callable[[World], Awaitable[Outcome]]) -> Callable[..., Any]:
        ATTACKS.append(Attack(run.__name__, title, run, prepare, env or {}))
        return run

    return register


# Figures ------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def tally(counts: Counter[str]) -> str:
    """How many of each: 612 times 200 and 20 times 503 read `612 × 200, 20 × 503`."""  # noqa: RUF002
    return ", ".join(f"{v:,} × {k}" for k, v in counts.most_common())  # noqa: RUF001


def spread(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {ms(statistics.median(ordered))} / p99 {ms(p99)}"


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def requests_seen(entries: list[list[Any]], t0: float, t1: float) -> str:
    """Statuses and latencies of the victim's requests started in [t0, t1]."""
    window = [e for e in entries if t0 <= e[0] <= t1]
    statuses = Counter(str(e[2]).replace("pending", "unanswered") for e in window)
    return f"{tally(statuses)} · {spread([e[1] for e in window])}"


def pushes_seen(seen: dict[str, Any], t0: float, t1: float) -> str:
    """Of the victim's publishes answered 201 in the window, how many pushes
    came, and how long after the POST was sent."""
    published = [
        (e[0], f"victim {n}")
        for n, e in enumerate(seen["publishes"])
        if e[2] == 201 and t0 <= e[0] <= t1
    ]
    if not published:
        return "nothing was published"
    late = [seen["pushes"][m] - sent for sent, m in published if m in seen["pushes"]]
    text = f"{len(late)}/{len(published)} arrived"
    if late:
        text += f" · p50 {ms(statistics.median(late))}, max {ms(max(late))} after the POST"
    if seen["closes"]:
        text += f" · socket closed: {seen['closes']}"
    return text


async def audit_size(db: asyncpg.Connection) -> tuple[int, int]:
    """audit_log's rows and bytes (with its indexes and TOAST)."""
    row = await db.fetchrow(
        "SELECT count(*) AS n, pg_total_relation_size('audit_log') AS size FROM audit_log"
    )
    return row["n"], row["size"]


async def deadlocks(db: asyncpg.Connection) -> int:
    return await db.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )


def memory_kib(server: Server, field_name: str) -> int:
    """VmRSS or VmHWM (peak) of the server's processes, summed."""
    total = 0
    for pid in server.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                total += int(line.split()[1])
    return total


# Attackers -----------------------------------------------------------------


def attacker_session(world: World) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        world.server.http,
        connector=aiohttp.TCPConnector(limit=0, local_addr=(ATTACKER, 0)),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def status_of(request: Any) -> str:
    """An HTTP call's status, or what became of it."""
    try:
        async with request as r:
            await r.read()
            return str(r.status)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "dropped"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def workers(count: int, seconds: float, one: Callable[[int], Awaitable[str]]) -> Counter:
    """`count` loops of `one(k)` for `seconds`: the tally of what they got.
    The calls still waiting at the end are cut; those sent more than a
    second before are counted as unanswered."""
    got: Counter[str] = Counter()

    async def work(k: int) -> None:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                while True:
                    sent = time.monotonic()
                    got[await one(k)] += 1
        except TimeoutError:
            if time.monotonic() - sent > 1:
                got["unanswered at the end"] += 1

    await asyncio.gather(*(work(k) for k in range(count)))
    return got


class Nearest:
    """Per worker: the attack as it is until it is refused (`refused(label)`),
    then the nearest thing accepted; each label says which was sent."""

    def __init__(self, refused: Callable[[str], bool]):
        self.refused = refused
        self.switched: set[int] = set()

    async def send(
        self, k: int, as_is: Callable[[], Awaitable[str]], nearest: Callable[[], Awaitable[str]]
    ) -> str:
        if k in self.switched:
            return f"nearest: {await nearest()}"
        label = await as_is()
        if self.refused(label):
            self.switched.add(k)
        return f"as sent: {label}"


def attacker_text(got: Counter[str], nearest: str) -> str:
    """`as sent: …; nearest allowed (what): …` from Nearest's labels."""
    kinds: dict[str, Counter[str]] = {}
    for label, n in got.items():
        kind, _, status = label.rpartition(": ")
        kinds.setdefault(kind, Counter())[status] += n
    parts = []
    for kind, counts in kinds.items():
        head = f"nearest allowed ({nearest})" if kind == "nearest" else kind
        parts.append(f"{head}: {tally(counts)}" if head else tally(counts))
    return "; ".join(parts)


async def socket_attack(
    world: World,
    seconds: float,
    sockets: int,
    frames: Callable[[], tuple[dict, dict]],
    *,
    protocols: tuple[str, ...] = (),
    refused: Callable[[str], bool],
) -> tuple[Counter[str], list[float]]:
    """`sockets` sockets of the attacker, each sending a frame (as it is, then
    the nearest, see Nearest) and waiting for its answer, over and over for
    `seconds`, as fast as the server's frame limit lets a user: the tally of
    the answers, and the round trips of the pages."""
    url = f"{world.server.ws}/ws/notifications/?token={world.server.token(world.attacker)}"
    trips: list[float] = []
    next_slot = time.monotonic()

    async def ask(ws: aiohttp.ClientWebSocketResponse, frame: dict) -> str:
        nonlocal next_slot
        slot = next_slot = max(next_slot + FRAME_INTERVAL, time.monotonic())
        await asyncio.sleep(slot - time.monotonic())
        started = time.monotonic()
        await ws.send_str(orjson.dumps(frame).decode())
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            answer = orjson.loads(message.data)
            if answer.get("type") == "notifications_list":
                trips.append(time.monotonic() - started)
                return "a page"
            if answer.get("type") == "error":
                return f"error {answer.get('code')}"
        return f"closed {ws.close_code}"

    near = Nearest(refused)
    async with aiohttp.ClientSession() as session:
        opened = [
            await session.ws_connect(url, protocols=protocols, max_msg_size=2**24)
            for _ in range(sockets)
        ]

        def one(k: int) -> Awaitable[str]:
            as_is, nearest = frames()
            ws = opened[k]
            return near.send(k, lambda: ask(ws, as_is), lambda: ask(ws, nearest))

        got = await workers(sockets, seconds, one)
        for ws in opened:
            await ws.close()
    return got, trips


async def inbox_of(world: World, count: int, data: dict | None = None) -> None:
    """`count` items in the attacker's inbox, by plain SQL."""
    await world.seed.history([world.mine], 1, count, data)


# Scheduling ----------------------------------------------------------------

DUE_FOR_VICTIM = "scheduled notification"


async def due_for_victim(world: World, seconds: float = 3.0) -> dict[str, float]:
    """A notification scheduled to the victim, and one of theirs that expires,
    both `seconds` from now (plain SQL): {message: when due}."""
    send_at = await world.db.fetchval(
        "INSERT INTO notification (tag_id, message, send_at) "
        "VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING send_at",
        world.theirs,
        DUE_FOR_VICTIM,
        seconds,
    )
    world.extra["expiring"] = await world.db.fetchval(
        "INSERT INTO notification (tag_id, message, expires_at) "
        "VALUES ($1, 'expiring', now() + make_interval(secs => $2)) RETURNING id",
        world.theirs,
        seconds,
    )
    return {DUE_FOR_VICTIM: send_at.timestamp()}


async def scheduling_notes(world: World, note: int | None = None) -> dict[str, str]:
    """When the victim's expiring item was marked; what became of `note`."""
    row = await world.db.fetchrow(
        "SELECT extract(epoch FROM expired_at - expires_at)::float8 AS late, "
        "extract(epoch FROM now() - expires_at)::float8 AS since "
        "FROM notification WHERE id = $1",
        world.extra["expiring"],
    )
    notes = {
        "victim's expiring item": f"marked {ms(row['late'])} after it expired"
        if row["late"] is not None
        else f"not marked in the {row['since']:.0f} s after it expired"
    }
    if note is not None:
        state = await world.db.fetchval(
            "SELECT to_jsonb(n) - 'message' FROM notification AS n WHERE id = $1", note
        )
        if state is None:
            notes["the attack's row"] = "none"
        elif state.get("delivered_at"):
            notes["the attack's row"] = "delivered"
        else:
            error = state.get("delivery_error")
            notes["the attack's row"] = (
                f"not delivered; failed {state['delivery_attempts']} times ({error})"
                if error
                else "not delivered, no error recorded"
            )
    return notes


# The attacks, in the order ------------------------------------------


@attack(
    "1a. hostile `data` filter in a bulk body (879 KiB), 30 at a time for 15 s, 5,000-item inbox",
    prepare=lambda world: inbox_of(world, 5_000, ACTIONS),
)
async def filter_bulk(world: World) -> Outcome:
    headers = {**world.headers(world.attacker), "Content-Type": "application/json"}
    as_is = orjson.dumps({"action": "read", "filter": {"data": HOSTILE}})
    nearest = orjson.dumps({"action": "read", "filter": {"data": BOUNDED}})
    near = Nearest(lambda label: label in ("413", "422"))
    async with attacker_session(world) as http:

        def post(body: bytes) -> Callable[[], Awaitable[str]]:
            return lambda: status_of(http.post("/api/inbox/bulk/", data=body, headers=headers))

        got = await workers(30, 15, lambda k: near.send(k, post(as_is), post(nearest)))
    return Outcome(attacker_text(got, "16 values"))


@attack(
    "1b. the same filter in a 58 KiB socket frame, 20 sockets looping for 15 s, 300-item inbox",
    prepare=lambda world: inbox_of(world, 300, ACTIONS),
)
async def filter_socket(world: World) -> Outcome:
    as_is = {"type": "notifications_list", "limit": 100, "data": HOSTILE_FRAME}
    nearest = {"type": "notifications_list", "limit": 100, "data": BOUNDED}
    got, trips = await socket_attack(
        world,
        15,
        20,
        lambda: (as_is, nearest),
        protocols=("citelink.v1",),
        refused=lambda label: label == "error invalid",
    )
    return Outcome(attacker_text(got, "16 values"), {"attacker's pages": spread(trips)})


@attack("2a. a scheduled row naming a user that does not exist (plain SQL), 15 s")
async def sched_unknown_user(world: World) -> Outcome:
    due = await due_for_victim(world)
    note = None
    try:
        note = await world.db.fetchval(
            "INSERT INTO notification (users, message, send_at) "
            "VALUES ($1, 'to nobody', now() + interval '1 second') RETURNING id",
            [NOBODY],
        )
        got = "inserted"
    except asyncpg.PostgresError as exc:
        got = f"refused at insert: {exc} (2b is the nearest thing accepted)"
    await asyncio.sleep(15)
    notes = await scheduling_notes(world, note)
    if note is None:
        notes["the attack's row"] = "none"
    return Outcome(got, notes, due)


@attack("2b. a user deleted after the API scheduled a notification to them, 15 s")
async def sched_deleted_user(world: World) -> Outcome:
    (gone,) = await world.users("gone", 1)
    due = await due_for_victim(world)
    send_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    async with attacker_session(world) as http:
        posted = await http.post(
            "/api/notifications/",
            json={"users": [gone], "message": "to someone", "send_at": send_at.isoformat()},
            headers=world.headers(world.staff),
        )
        note = (await posted.json())["id"]
    await world.db.execute("DELETE FROM users WHERE id = $1", gone)
    await asyncio.sleep(15)
    return Outcome(
        f"scheduled ({posted.status}), then the user deleted by SQL",
        await scheduling_notes(world, note),
        due,
    )


async def crowd(world: World) -> None:
    world.extra["crowd"] = await world.seed.tag("crowd", await world.users("crowd", 100_000))


@attack(
    "2c. a scheduled fan-out longer than CITELINK_DB_QUERY_SECONDS (100,000 subscribers, "
    "0.5 s), 20 s",
    prepare=crowd,
    env={"CITELINK_DB_QUERY_SECONDS": "0.5"},
)
async def sched_timeout(world: World) -> Outcome:
    note = await world.db.fetchval(
        "INSERT INTO notification (tag_id, message, send_at) "
        "VALUES ($1, 'to 100,000', now() + interval '1 second') RETURNING id",
        world.extra["crowd"],
    )
    due = await due_for_victim(world)
    await asyncio.sleep(20)
    return Outcome("due in 1 s", await scheduling_notes(world, note), due)


@attack("2d. a due row locked by another transaction for 12 s")
async def sched_held_row(world: World) -> Outcome:
    xacts = (
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )

    async def rates(seconds: float) -> str:
        """Transactions per second in the database, and the server's CPU."""
        count, cpu, started = (
            await world.db.fetchval(xacts),
            world.server.cpu_seconds(),
            time.monotonic(),
        )
        await asyncio.sleep(seconds)
        took = time.monotonic() - started
        per_second = (await world.db.fetchval(xacts) - count) / took
        busy = (world.server.cpu_seconds() - cpu) / took
        return f"{per_second:,.0f} transactions/s, server CPU {busy:.0%}"

    idle = await rates(3)
    note = await world.db.fetchval(
        "INSERT INTO notification (tag_id, message, send_at) "
        "VALUES ($1, 'held', now() + interval '1 second') RETURNING id",
        world.mine,
    )
    holder = await world.seed.another_connection()
    try:
        async with holder.transaction():
            await holder.execute("SELECT FROM notification WHERE id = $1 FOR UPDATE", note)
            due = await due_for_victim(world)
            await asyncio.sleep(2)
            held = await rates(10)
    finally:
        await holder.close()
    return Outcome(
        "row locked (FOR UPDATE) from before it was due",
        {"database while idle → while held": f"{idle} → {held}", **await scheduling_notes(world)},
        due,
    )


async def grouped_items(world: World) -> None:
    others = await world.users("recipient", 28)
    tag = await world.seed.tag("grouped", [world.attacker, world.victim, *others])
    await world.db.execute(
        "INSERT INTO notification (tag_id, message, group_key) VALUES ($1, 'grouped', 'k')", tag
    )
    item = "SELECT id FROM user_notification WHERE user_id = $1 AND group_key = 'k'"
    world.extra["grouped"] = tag
    world.extra["item"] = await world.db.fetchval(item, world.attacker)
    world.victim_patch = await world.db.fetchval(item, world.victim)


@attack(
    "3a. one recipient toggles `is_seen` from 4 connections while grouped publishes "
    "(one key, 2 at a time) go to 30 users, 12 s; the victim PATCHes its own grouped item",
    prepare=grouped_items,
)
async def seen_vs_grouping(world: World) -> Outcome:
    mine, staff = world.headers(world.attacker), world.headers(world.staff)
    path = f"/api/inbox/{world.extra['item']}/"
    flags = [False] * 4
    times: list[float] = []
    sent = iter(range(10**9))
    async with attacker_session(world) as http:

        async def toggle(k: int) -> str:
            flags[k] = not flags[k]
            return await status_of(http.patch(path, json={"is_seen": flags[k]}, headers=mine))

        async def publish(k: int) -> str:
            body = {"message": f"grouped {next(sent)}", "tag": world.extra["grouped"]}
            started = time.monotonic()
            status = await status_of(
                http.post("/api/notifications/", json={**body, "group_key": "k"}, headers=staff)
            )
            times.append(time.monotonic() - started)
            return status

        toggled, published = await asyncio.gather(workers(4, 12, toggle), workers(2, 12, publish))
    return Outcome(
        f"PATCH is_seen: {tally(toggled)}",
        {"grouped publishes in 12 s": f"{tally(published)} · {spread(times)}"},
    )


@attack(
    "3b. four bulk read/unread calls at a time by one user (6 each), 20,000-item inbox",
    prepare=lambda world: inbox_of(world, 20_000),
)
async def bulk_deadlock(world: World) -> Outcome:
    headers = world.headers(world.attacker)
    got: Counter[str] = Counter()
    async with attacker_session(world) as http:

        async def calls(k: int) -> None:
            for n in range(6):
                body = {"action": "read" if (k + n) % 2 == 0 else "unread"}
                got[await status_of(http.post("/api/inbox/bulk/", json=body, headers=headers))] += 1

        started = time.monotonic()
        try:
            async with asyncio.timeout(50):
                await asyncio.gather(*(calls(k) for k in range(4)))
        except TimeoutError:
            got["not sent or unanswered in 50 s"] = 24 - got.total()
        took = time.monotonic() - started
    counts = await world.db.fetchrow(
        "SELECT (SELECT unread FROM inbox_count WHERE user_id = $1) AS kept, "
        "(SELECT count(*) FROM user_notification WHERE user_id = $1 AND NOT is_read "
        "AND NOT is_deleted AND NOT is_archived AND NOT is_expired) AS counted",
        world.attacker,
    )
    return Outcome(
        f"{tally(got)} in {took:.1f} s",
        {"attacker's unread count afterwards": f"{counts['kept']:,}, items {counts['counted']:,}"},
    )


@attack(
    "4. 20 seed-protocol sockets of one user asking deep numbered pages (501 to 1,000 of 100 "
    "items) of a 100,000-item inbox, 15 s",
    prepare=lambda world: inbox_of(world, 100_000),
)
async def seed_deep_pages(world: World) -> Outcome:
    def frames() -> tuple[dict, dict]:
        page = random.randint(501, 1000)
        return (
            {"type": "notifications_list", "page": page, "page_size": 100},
            {"type": "notifications_list", "page": 100, "page_size": 100},
        )

    got, trips = await socket_attack(
        world, 15, 20, frames, refused=lambda label: label == "error page_too_deep"
    )
    return Outcome(attacker_text(got, "page 100, the deepest"), {"attacker's pages": spread(trips)})


async def ten_members(world: World) -> None:
    world.extra["ten"] = await world.seed.tag("ten", await world.users("member", 10))


@attack(
    "5a. 1,000 grouped publishes (one key) to 10 users, one after the other (at most 50 s)",
    prepare=ten_members,
)
async def grouping_growth(world: World) -> Outcome:
    staff = world.headers(world.staff)
    times: list[float] = []
    got: Counter[str] = Counter()
    rows0, size0 = await audit_size(world.db)
    stop = time.monotonic() + 50
    async with attacker_session(world) as http:
        for n in range(1000):
            if time.monotonic() > stop:
                break
            body = {"message": f"grouped {n}", "tag": world.extra["ten"], "group_key": "k"}
            started = time.monotonic()
            got[await status_of(http.post("/api/notifications/", json=body, headers=staff))] += 1
            times.append(time.monotonic() - started)
    rows1, size1 = await audit_size(world.db)
    largest = await world.db.fetchval(
        "SELECT max(pg_column_size(a.*)) FROM "
        "(SELECT * FROM audit_log ORDER BY id DESC LIMIT 200) AS a"
    )
    per = (size1 - size0) / max(1, len(times))
    return Outcome(
        f"{tally(got)} · first 100 {spread(times[:100])}, last 100 {spread(times[-100:])}",
        {
            "audit of the grouped publishes": f"+{rows1 - rows0:,} rows, +{mib(size1 - size0)} "
            f"({per / 1024:,.1f} KiB a publish); largest recent row {largest / 1024:,.1f} KiB"
        },
    )


@attack(
    "5b. one user's bulk read/unread calls, one after the other for 12 s, 5,000-item inbox",
    prepare=lambda world: inbox_of(world, 5_000),
)
async def bulk_audit(world: World) -> Outcome:
    headers = world.headers(world.attacker)
    actions = iter(["read", "unread"] * 10**6)
    async with attacker_session(world) as http:
        got = await workers(
            1,
            12,
            lambda k: status_of(
                http.post("/api/inbox/bulk/", json={"action": next(actions)}, headers=headers)
            ),
        )
    return Outcome(f"bulk calls: {tally(got)}")


# Running --------------------------------------------------------------------


async def measure(attack: Attack, version: Version) -> dict[str, str]:
    """One attack on one version, on a server and database of its own."""
    server = Server(src=version.src, env={**DEFAULTS, **attack.env})
    seed: Seed | None = None
    try:
        server.start()
        seed = await Seed.connect(server.database_url)
        world = await make_world(version, server, seed)
        if attack.prepare:
            await attack.prepare(world)
        await seed.conn.execute("VACUUM ANALYZE")
        rows0, audit0 = await audit_size(seed.conn)
        locks0 = await deadlocks(seed.conn)
        rss0, cpu0 = memory_kib(server, "VmRSS"), server.cpu_seconds()
        victim = await Victim.start(world)
        await asyncio.sleep(1)
        t0 = time.time()
        outcome = await attack.run(world)
        t1 = time.time()
        await asyncio.sleep(1)  # the last pushes
        seen = await victim.stop()
        rss1, peak = memory_kib(server, "VmRSS"), memory_kib(server, "VmHWM")
        cpu1 = server.cpu_seconds()
        rows1, audit1 = await audit_size(seed.conn)
        server.stop()
        await asyncio.sleep(1)  # the server's backends report their statistics as they exit
        locks1 = await deadlocks(seed.conn)
    finally:
        if seed:
            await seed.close()
        server.close()
    for message, due in outcome.due.items():
        came = seen["pushes"].get(message)
        outcome.notes[f"victim's {message}"] = (
            f"pushed {ms(came - due)} after it was due"
            if came is not None
            else f"not pushed in the {t1 - due:.0f} s after it was due"
        )
    rest = "victim's PATCH" if world.victim_patch else "victim's GET /api/inbox/counts/"
    return {
        "attacker got": outcome.attacker,
        rest: requests_seen(seen["rest"], t0, t1),
        "publishes to the victim, every 250 ms": requests_seen(seen["publishes"], t0, t1),
        "victim's pushes": pushes_seen(seen, t0, t1),
        **outcome.notes,
        "deadlocks · audit": f"{locks1 - locks0} · +{rows1 - rows0:,} rows, "
        f"+{mib(audit1 - audit0)}",
        "server RSS · CPU": f"{rss0 // 1024} → {rss1 // 1024} MiB (peak {peak // 1024}) · "
        f"{cpu1 - cpu0:.1f} s in {t1 - t0:.0f} s",
    }


class Victim:
    """bench/victim.py, measuring one world."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls, world: World) -> Victim:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.victim",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        config = {
            "http": world.server.http,
            "ws": world.server.ws,
            "token": world.server.token(world.victim),
            "publisher": world.server.token(world.publisher, staff=True),
            "tag": world.theirs,
            "patch": world.victim_patch,
        }
        assert process.stdin and process.stdout
        process.stdin.write(orjson.dumps(config) + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the victim did not start: {line!r}")
        return cls(process)

    async def stop(self) -> dict[str, Any]:
        out, _ = await self.process.communicate(b"")
        return orjson.loads(out)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def loaded_from(src: Path | None) -> str:
    """Where `import citelink` finds the package with this PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if src:
        env["PYTHONPATH"] = str(src)
    return subprocess.run(
        [sys.executable, "-c", "import citelink; print(citelink.__file__)"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def versions(against: str, tree: Path) -> list[Version]:
    """The older commit's checkout and this tree, each checked to be what runs."""
    if not (tree / "src" / "citelink").is_dir():
        sys.exit(f"no checkout of {against} at {tree}: git worktree add {tree} {against}")
    wanted, found = git("rev-parse", f"{against}^{{commit}}"), git("rev-parse", "HEAD", cwd=tree)
    if wanted != found:
        sys.exit(f"{tree} is at {found[:7]}, not {against}: check out {against} there")
    before = Version("before", found[:7], tree.resolve() / "src")
    after = Version("after", git("rev-parse", "--short", "HEAD"), None)
    if git("status", "--porcelain", "src", "sql", "migrations"):
        after.commit += " + changes"
    for version, where in ((before, before.src), (after, ROOT / "src")):
        assert where is not None
        path = loaded_from(version.src)
        if not path.startswith(str(where)):
            sys.exit(f"the {version.label} version imports citelink from {path}, not {where}")
    return [before, after]


def machine() -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "-"

    memory = int(read("/proc/meminfo").split()[1]) // 1024 if Path("/proc/meminfo").exists() else 0
    return {
        "cores": os.cpu_count(),
        "memory_mib": memory,
        "cgroup_cpu_max": read("/sys/fs/cgroup/cpu.max"),
        "cgroup_memory_max": read("/sys/fs/cgroup/memory.max"),
        "load_average": read("/proc/loadavg"),
        "python": platform.python_version(),
    }


def table(results: list[dict[str, Any]], pair: list[Version]) -> str:
    """One row per attack and measure; a cell holds each round's figure."""
    before, after = pair
    lines = [
        f"| attack | measure | before ({before.commit}) | after ({after.commit}) |",
        "|---|---|---|---|",
    ]
    for result in results:
        rounds = result["rounds"]
        labels: list[str] = []
        for one in rounds:
            for figures in one["figures"].values():
                labels += [label for label in figures if label not in labels]
        for n, label in enumerate(labels):
            cells = []
            for version in ("before", "after"):
                texts = [one["figures"][version].get(label, "-") for one in rounds]
                if len(texts) > 1:
                    texts = [f"{r}: {text}" for r, text in enumerate(texts, 1)]
                cells.append("<br>".join(texts))
            row = [f"**{result['title']}**" if n == 0 else "", label, *cells]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


async def run(chosen: list[Attack], pair: list[Version], rounds: int) -> list[dict[str, Any]]:
    """Each attack on both versions, round after round; in each round the
    attacks alternate which version goes first, and so do the rounds."""
    results = [{"attack": one.name, "title": one.title, "rounds": []} for one in chosen]
    for r in range(rounds):
        for i, one in enumerate(chosen):
            order = pair if (i + r) % 2 == 0 else pair[::-1]
            figures = {}
            for version in order:
                log(f"{one.name}, round {r + 1}: {version.label} ({version.commit})")
                started = time.monotonic()
                figures[version.label] = await measure(one, version)
                log(f"  done in {time.monotonic() - started:.0f} s")
            results[i]["rounds"].append({"order": [v.label for v in order], "figures": figures})
    return results


def main() -> int:
    names = [a.name for a in ATTACKS]
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--against", required=True, help="the older commit (before)")
    parser.add_argument("--old-tree", type=Path, help="its checkout (default ../old-REV-attacks)")
    parser.add_argument("--only", nargs="+", choices=names, help="these attacks only")
    parser.add_argument("--rounds", type=int, default=1, help="each attack this many times")
    parser.add_argument("--output", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    tree = args.old_tree or ROOT.parent / f"old-{args.against}-attacks"
    pair = versions(args.against, tree)
    chosen = [a for a in ATTACKS if not args.only or a.name in args.only]
    started = dt.datetime.now(dt.UTC)
    about = {"started": started.isoformat(timespec="seconds"), "machine": machine()}
    results = asyncio.run(run(chosen, pair, args.rounds))
    about["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    about["load_average_at_end"] = machine()["load_average"]
    print(table(results, pair))
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"attacks-{started:%Y%m%d-%H%M%S}.json"
    versions_seen = {v.label: {"commit": v.commit, "src": str(v.src or ROOT / "src")} for v in pair}
    path.write_bytes(
        orjson.dumps(
            {**about, "versions": versions_seen, "results": results},
            option=orjson.OPT_INDENT_2,
        )
    )
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
