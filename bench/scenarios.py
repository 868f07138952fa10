"""The benchmark scenarios. Each returns a dict of figures."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass

import aiohttp
import orjson
import websockets

from .clients import ClientProcess
from .server import Seed, Server


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ms(ns: float) -> float:
    return round(ns / 1e6, 2)


@dataclass
class Fleet:
    """The connected users: user i holds one socket in client process i % len(clients)."""

    clients: list[ClientProcess]

    def expected(self, first_n: int) -> list[int]:
        """Frames each client gets when the first `first_n` connected users are targeted."""
        count = len(self.clients)
        return [first_n // count + (1 if k < first_n % count else 0) for k in range(count)]

    def arm(self, first_n: int | None, timeout: float, per_user: int = 1) -> None:
        """Record frames until each client got its share of `first_n` users x
        `per_user` frames, or `timeout`; None: record everything until timeout."""
        if first_n is None:
            for client in self.clients:
                client.arm(None, timeout)
            return
        for client, count in zip(self.clients, self.expected(first_n), strict=True):
            client.arm(count * per_user, timeout)

    def collect(self) -> list[tuple[int, int, str]]:
        return [r for client in self.clients for r in client.records()]

    def cpu_used(self) -> float:
        """CPU seconds the client processes used during the last recording."""
        return sum(client.cpu_used for client in self.clients)


def http_client(url: str, token: str | None = None) -> aiohttp.ClientSession:
    """A keep-alive HTTP client for the server at `url`. aiohttp, not httpx:
    httpx spends about 1.1 ms of CPU per request on this machine, aiohttp
    0.15 ms, and the client shares the 2 cores with the server it measures."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(url, headers=headers, timeout=aiohttp.ClientTimeout(total=60))


JSON = {"Content-Type": "application/json"}


async def post_json(http: aiohttp.ClientSession, path: str, body: dict) -> tuple[int, dict]:
    """Status and JSON body of a POST (bodies encoded and decoded with orjson)."""
    async with http.post(path, data=orjson.dumps(body), headers=JSON) as response:
        return response.status, orjson.loads(await response.read())


class Publisher:
    def __init__(self, server: Server, staff_id: int):
        self.http = http_client(server.http, server.token(staff_id, staff=True))

    async def post(self, tag: int, message: str) -> tuple[int, int, dict]:
        """Send and answer times (ns) and the response body of one publish."""
        sent = time.monotonic_ns()
        status, body = await post_json(
            self.http, "/api/notifications/", {"message": message, "tag": tag}
        )
        answered = time.monotonic_ns()
        if status != 201:
            raise RuntimeError(f"publish answered {status}: {body}")
        return sent, answered, body

    async def close(self) -> None:
        await self.http.close()


async def fan_out(fleet: Fleet, publisher: Publisher, tag: int, n: int, repeats: int = 3) -> dict:
    """One POST to a tag whose n subscribers each hold a socket: POST sent → last socket."""
    lasts, firsts, commits, received = [], [], [], []
    for r in range(repeats):
        fleet.arm(n, timeout=60)
        sent, answered, _ = await publisher.post(tag, f"fan-out {n} #{r}")
        commits.append(answered - sent)
        records = await asyncio.to_thread(fleet.collect)
        times = [t for t, _, _ in records]
        received.append(len(records))
        lasts.append(max(times) - sent if times else float("nan"))
        firsts.append(min(times) - sent if times else float("nan"))
    return {
        "subscribers": n,
        "last_socket_ms": ms(statistics.median(lasts)),
        "first_socket_ms": ms(statistics.median(firsts)),
        # The POST's answer: every inbox row committed (the relay's part is the rest).
        "commit_ms": ms(statistics.median(commits)),
        "runs_last_socket_ms": [ms(x) for x in lasts],
        "received": min(received),
        "expected": n,
    }


async def sockets_per_worker(server: Server, staff_id: int) -> list[int]:
    """Open sockets of each worker, from GET /metrics (one series per worker)."""
    headers = {"Authorization": f"Bearer {server.token(staff_id, staff=True)}"}
    async with (
        aiohttp.ClientSession(server.http) as http,
        http.get("/metrics", headers=headers) as response,
    ):
        text = await response.text()
    return sorted(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("citelink_sockets_open")
    )


async def workers(
    server: Server, staff_id: int, tag: int, user_ids: list[int], clients: int, counts: list[int]
) -> list[dict]:
    """The fan-out to every socket of `user_ids`, served by 1 worker, then by 2
    (`counts`), in the same run: a fresh `citelink serve --workers N` each time."""
    runs = []
    for count in counts:
        server.start(workers=count)
        started = time.monotonic()
        fleet = Fleet(
            [
                ClientProcess(server.ws, [server.token(u) for u in user_ids[k::clients]])
                for k in range(clients)
            ]
        )
        for client in fleet.clients:
            client.wait_ready()
        connect_s = time.monotonic() - started
        # Workers sample their gauges once a second: let the figures settle.
        await asyncio.sleep(1.5)
        spread = await sockets_per_worker(server, staff_id)
        publisher = Publisher(server, staff_id)
        try:
            result = await fan_out(fleet, publisher, tag, len(user_ids))
        finally:
            await publisher.close()
            for client in fleet.clients:
                client.close()
        runs.append(
            {
                "workers": count,
                "connect_s": round(connect_s, 1),
                "sockets_per_worker": spread,
                "rss_connected_kib": server.rss_kib(),
                **result,
            }
        )
        server.stop()
    return runs


async def big_fan_out(
    fleet: Fleet, publisher: Publisher, tag: int, subscribers: int, connected: int
) -> dict:
    fleet.arm(connected, timeout=120)
    sent, committed, body = await publisher.post(tag, "big fan-out")
    records = await asyncio.to_thread(fleet.collect)
    times = [t for t, _, _ in records]
    return {
        "subscribers": subscribers,
        "recipients": body.get("recipients"),
        "connected": connected,
        "commit_ms": ms(committed - sent),
        "last_socket_ms": ms(max(times) - sent) if times else None,
        "received": len(records),
    }


async def latency(
    fleet: Fleet, publisher: Publisher, tag: int, users: int, count: int, gap_s: float
) -> dict:
    fleet.arm(users, timeout=count * gap_s + 30, per_user=count)
    sent_at: dict[str, int] = {}
    round_trips: list[int] = []
    start = time.monotonic()

    async def one(i: int) -> None:
        message = f"latency #{i}"
        sent, answered, _ = await publisher.post(tag, message)
        sent_at[message] = sent
        round_trips.append(answered - sent)

    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i * gap_s - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    records = await asyncio.to_thread(fleet.collect)
    samples = [t - sent_at[m] for t, _, m in records if m in sent_at]
    return {
        "subscribers": users,
        "notifications": count,
        "gap_ms": gap_s * 1000,
        "deliveries": len(samples),
        "lost": users * count - len(samples),
        "p50_ms": ms(percentile(samples, 0.50)),
        "p99_ms": ms(percentile(samples, 0.99)),
        "max_ms": ms(max(samples)) if samples else None,
        # The POST's own round trip (auth, insert, fan-out, commit, answer): most
        # of the latency is here, before any socket is involved.
        "post_p50_ms": ms(percentile(round_trips, 0.50)),
        "post_p99_ms": ms(percentile(round_trips, 0.99)),
        "samples_ms": [ms(s) for s in samples],
    }


def _publish_loop(url: str, token: str, tag: int, concurrency: int, seconds: float, out) -> None:
    async def main() -> tuple[int, int]:
        ok = errors = 0
        deadline = time.monotonic() + seconds

        async def worker(w: int) -> None:
            nonlocal ok, errors
            # One connection per worker, as 8 separate HTTP clients would have.
            async with http_client(url, token) as http:
                i = 0
                while time.monotonic() < deadline:
                    status, _ = await post_json(
                        http, "/api/notifications/", {"message": f"throughput {w}/{i}", "tag": tag}
                    )
                    if status == 201:
                        ok += 1
                    else:
                        errors += 1
                    i += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return ok, errors

    ok, errors = asyncio.run(main())
    out.send((ok, errors, time.process_time()))


async def publish_throughput(
    fleet: Fleet,
    server: Server,
    staff_id: int,
    tag: int,
    subscribers: int,
    concurrency: int = 8,
    seconds: float = 10.0,
) -> dict:
    fleet.arm(None, timeout=seconds + 5)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_publish_loop,
        args=(server.http, server.token(staff_id, staff=True), tag, concurrency, seconds, child),
    )
    cpu0, pg0 = server.cpu_seconds(), server.postgres_cpu_seconds()
    proc.start()
    ok, errors, client_cpu = await asyncio.to_thread(parent.recv)
    cpu, pg = server.cpu_seconds() - cpu0, server.postgres_cpu_seconds() - pg0
    proc.join()
    records = await asyncio.to_thread(fleet.collect)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "subscribers": subscribers,
        "notifications_per_s": round(ok / seconds, 1),
        "deliveries_per_s": round(len(records) / seconds, 1),
        "inbox_rows_per_s": round(ok * subscribers / seconds, 1),
        "errors": errors,
        "server_cpu_cores": round(cpu / seconds, 2),
        "postgres_cpu_cores": round(pg / seconds, 2),
        "publisher_cpu_cores": round(client_cpu / seconds, 2),
        "socket_clients_cpu_cores": round(fleet.cpu_used() / (seconds + 5), 2),
    }


async def deliveries_per_process(
    fleet: Fleet, seed: Seed, server: Server, tag: int, users: int, count: int
) -> dict:
    """`count` notifications to `users` connected users, committed at once (one
    INSERT of `count` rows): from the commit to the last frame, only the relay works."""
    fleet.arm(users, timeout=120, per_user=count)
    await seed.conn.execute(
        "INSERT INTO notification (tag_id, message) SELECT $1, 'burst #' || g "
        "FROM generate_series(1, $2::int) g",
        tag,
        count,
    )
    cpu0, pg0 = server.cpu_seconds(), server.postgres_cpu_seconds()
    start = time.monotonic_ns()
    records = await asyncio.to_thread(fleet.collect)
    end = max(t for t, _, _ in records)
    cpu, pg = server.cpu_seconds() - cpu0, server.postgres_cpu_seconds() - pg0
    seconds = (end - start) / 1e9
    # The client processes also record (and idle) until the last frame, so
    # their CPU over the same span says how busy they were.
    return {
        "users": users,
        "notifications": count,
        "deliveries": len(records),
        "expected": users * count,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(len(records) / seconds),
        "server_cpu_cores": round(cpu / seconds, 2),
        "postgres_cpu_cores": round(pg / seconds, 2),
        "client_cpu_cores": round(fleet.cpu_used() / seconds, 2),
    }


async def history(
    seed: Seed, server: Server, user_id: int, tags: list[int], sizes: list[int], rounds: int = 50
) -> dict:
    """Round trips, as one user's inbox grows: the first page (20) over the
    socket (seed and cursor forms), filtered first pages over REST (two of
    three tags and unread; a `data` containment that one item in ten
    matches), and the counts."""
    results = []
    have = 0
    token = server.token(user_id)
    filtered = {
        "two_tags_unread": f"/api/inbox/?tag={tags[0]}&tag={tags[1]}&status=unread&limit=20",
        "data_containment": '/api/inbox/?data={"n":3}&limit=20',
    }
    async with http_client(server.http, token) as http:

        async def get(path: str) -> float:
            t0 = time.perf_counter_ns()
            async with http.get(path) as response:
                body = orjson.loads(await response.read())
            assert response.status == 200, body
            return time.perf_counter_ns() - t0

        for size in sizes:
            await seed.history(tags, have + 1, size - have)
            have = size
            # As autovacuum would after a bulk load of this size.
            await seed.conn.execute("ANALYZE user_notification, notification")
            async with websockets.connect(
                f"{server.ws}/ws/notifications/?token={token}",
                compression=None,
                max_size=None,
                subprotocols=["citelink.v1"],
            ) as ws:

                async def round_trip(frame: dict) -> float:
                    raw = orjson.dumps(frame)
                    t0 = time.perf_counter_ns()
                    await ws.send(raw.decode())
                    while True:
                        answer = orjson.loads(await ws.recv())
                        if answer["type"] == frame["type"]:
                            break
                    assert len(answer["data"]) == 20, answer
                    return time.perf_counter_ns() - t0

                pages = [
                    await round_trip({"type": "notifications_list", "page": 1, "page_size": 20})
                    for _ in range(rounds)
                ]
                cursors = [
                    await round_trip({"type": "notifications_list", "limit": 20})
                    for _ in range(rounds)
                ]
            counts = [await get("/api/inbox/counts/") for _ in range(rounds)]
            row = {
                "items": size,
                "page_ms": ms(statistics.median(pages)),
                "cursor_page_ms": ms(statistics.median(cursors)),
                "unread_count_ms": ms(statistics.median(counts)),
            }
            for name, path in filtered.items():
                row[f"{name}_ms"] = ms(statistics.median([await get(path) for _ in range(rounds)]))
            results.append(row)
    return {"sizes": results}


async def bulk_archive(server: Server, user_id: int) -> dict:
    """POST /api/inbox/bulk/ archiving the user's items whose data has n = 3
    (100,000 of 1,000,000) while one socket of theirs is open: the answer
    (committed), and when the socket has the result (its `refresh` and
    counts); the socket must stay open."""
    token = server.token(user_id)
    async with (
        websockets.connect(
            f"{server.ws}/ws/notifications/?token={token}",
            max_size=None,
            subprotocols=["citelink.v1"],
        ) as ws,
        http_client(server.http, token) as http,
    ):
        sent = time.monotonic_ns()
        status, body = await post_json(
            http, "/api/inbox/bulk/", {"action": "archive", "filter": {"data": {"n": 3}}}
        )
        answered = time.monotonic_ns()
        frames = []
        while not (frames and frames[-1]["type"] == "counts" and frames[-1]["archived"]):
            frames.append(orjson.loads(await ws.recv()))
        told = time.monotonic_ns()
        await ws.send('{"type":"ping"}')
        while orjson.loads(await ws.recv())["type"] != "pong":
            pass
    return {
        "status": status,
        "archived": body.get("updated"),
        "commit_ms": ms(answered - sent),
        "socket_has_it_ms": ms(told - sent),
        "frames": [f["type"] for f in frames],
        "socket_open": True,
    }


async def login(
    server: Server, username: str, password: str, concurrency: int = 4, seconds: float = 5.0
) -> dict:
    ok = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok
        async with http_client(server.http) as http:
            while time.monotonic() < deadline:
                status, body = await post_json(
                    http, "/api/token/", {"username": username, "password": password}
                )
                if status != 200:
                    raise RuntimeError(f"login answered {status}: {body}")
                ok += 1

    cpu0 = server.cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "logins_per_s": round(ok / seconds, 1),
        "concurrency": concurrency,
        "server_cpu_cores": round((server.cpu_seconds() - cpu0) / seconds, 2),
        "hash": "argon2id t=2 m=19MiB p=1",
    }


async def head_of_line(
    fleet: Fleet, publisher: Publisher, big_tag: int, single_tag: int, connected: int, rounds: int
) -> dict:
    """A broadcast to the big tag is in flight when, 100 ms later, a notification
    goes to a tag of one subscriber who shares nothing with it: how long does
    the small one take, POST sent → its socket? (The broadcast's `connected`
    recipients and that one subscriber are the first connected + 1 users.)"""
    singles, broadcasts = [], []
    for r in range(rounds):
        fleet.arm(connected + 1, timeout=120)
        broadcast = asyncio.create_task(publisher.post(big_tag, f"broadcast #{r}"))
        await asyncio.sleep(0.1)
        sent, _, _ = await publisher.post(single_tag, f"single #{r}")
        b_sent, b_answered, _ = await broadcast
        records = await asyncio.to_thread(fleet.collect)
        pushed = [t for t, _, m in records if m == f"single #{r}"]
        singles.append(pushed[0] - sent if pushed else float("nan"))
        broadcasts.append(b_answered - b_sent)
    return {
        "rounds": rounds,
        "single_push_p50_ms": ms(statistics.median(singles)),
        "single_push_runs_ms": [ms(s) for s in singles],
        "broadcast_commit_p50_ms": ms(statistics.median(broadcasts)),
        "broadcast_commit_runs_ms": [ms(b) for b in broadcasts],
    }


async def idle_writer(
    fleet: Fleet,
    seed: Seed,
    publisher: Publisher,
    server: Server,
    reader_id: int,
    held_tag: int,
    free_tag: int,
    count: int,
    gap_s: float,
) -> dict:
    """A session inserts a notification on `held_tag` and does not commit (a
    psql user, a slow batch job) while `count` POSTs go to `free_tag`, whose
    subscribers are not `held_tag`'s, `gap_s` apart; then it commits. Each
    POST's answer and push, and another user's GET /api/inbox/counts/."""
    timeout = aiohttp.ClientTimeout(total=30)
    sent_at: dict[str, int] = {}
    answers: list[int] = []
    statuses: list[int] = []
    counts: list[int] = []
    idle = await seed.another_connection()
    fleet.arm(None, timeout=count * gap_s + 8)
    tx = idle.transaction()
    await tx.start()
    await idle.execute(
        "INSERT INTO notification (tag_id, message) VALUES ($1, 'held open')", held_tag
    )
    start = time.monotonic()

    async def one(i: int) -> None:
        message = f"free #{i}"
        sent_at[message] = time.monotonic_ns()
        async with publisher.http.post(
            "/api/notifications/",
            data=orjson.dumps({"message": message, "tag": free_tag}),
            headers=JSON,
            timeout=timeout,
        ) as response:
            await response.read()
            statuses.append(response.status)
        answers.append(time.monotonic_ns() - sent_at[message])

    async with http_client(server.http, server.token(reader_id)) as reader:

        async def read_counts() -> None:
            t0 = time.monotonic_ns()
            async with reader.get("/api/inbox/counts/", timeout=timeout) as response:
                await response.read()
            counts.append(time.monotonic_ns() - t0)

        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i * gap_s - time.monotonic()))
            tasks += [asyncio.create_task(one(i)), asyncio.create_task(read_counts())]
        # The idle session gives up 5 s after the last POST was sent, not before.
        await asyncio.wait(tasks, timeout=5)
        published_while_open = statuses.count(201)
        held_s = time.monotonic() - start
        await tx.commit()
        await asyncio.gather(*tasks)
    await idle.close()
    records = await asyncio.to_thread(fleet.collect)
    pushes = [t - sent_at[m] for t, _, m in records if m in sent_at]
    return {
        "posts": count,
        "gap_ms": gap_s * 1000,
        "held_open_s": round(held_s, 2),
        "published_while_open": published_while_open,
        "errors": len(statuses) - statuses.count(201),
        "post_p50_ms": ms(percentile(answers, 0.5)),
        "post_p99_ms": ms(percentile(answers, 0.99)),
        "push_p50_ms": ms(percentile(pushes, 0.5)),
        "push_p99_ms": ms(percentile(pushes, 0.99)),
        "pushes": len(pushes),
        "counts_p50_ms": ms(percentile(counts, 0.5)),
        "counts_p99_ms": ms(percentile(counts, 0.99)),
    }


def _parallel_loop(url: str, token: str, tags: list[int], seconds: float, out) -> None:
    async def main() -> tuple[int, int]:
        ok = errors = 0
        deadline = time.monotonic() + seconds

        async def worker(tag: int) -> None:
            nonlocal ok, errors
            async with http_client(url, token) as http:
                i = 0
                while time.monotonic() < deadline:
                    status, _ = await post_json(
                        http, "/api/notifications/", {"message": f"parallel {tag}/{i}", "tag": tag}
                    )
                    ok, errors = (ok + 1, errors) if status == 201 else (ok, errors + 1)
                    i += 1

        await asyncio.gather(*(worker(tag) for tag in tags))
        return ok, errors

    ok, errors = asyncio.run(main())
    out.send((ok, errors, time.process_time()))


async def parallel_publishers(
    fleet: Fleet,
    server: Server,
    staff_id: int,
    tags: list[int],
    subscribers: int,
    seconds: float = 10.0,
) -> dict:
    """One HTTP client per tag, each tag with its own `subscribers` (connected),
    publishing as fast as answers come for `seconds`: notifications and
    deliveries per second, and the CPU each process used."""
    fleet.arm(None, timeout=seconds + 5)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_parallel_loop,
        args=(server.http, server.token(staff_id, staff=True), tags, seconds, child),
    )
    cpu0, pg0 = server.cpu_seconds(), server.postgres_cpu_seconds()
    proc.start()
    ok, errors, client_cpu = await asyncio.to_thread(parent.recv)
    cpu, pg = server.cpu_seconds() - cpu0, server.postgres_cpu_seconds() - pg0
    proc.join()
    records = await asyncio.to_thread(fleet.collect)
    return {
        "publishers": len(tags),
        "seconds": seconds,
        "subscribers_per_tag": subscribers,
        "notifications_per_s": round(ok / seconds, 1),
        "deliveries_per_s": round(len(records) / seconds, 1),
        "errors": errors,
        "server_cpu_cores": round(cpu / seconds, 2),
        "postgres_cpu_cores": round(pg / seconds, 2),
        "publisher_cpu_cores": round(client_cpu / seconds, 2),
        "socket_clients_cpu_cores": round(fleet.cpu_used() / (seconds + 5), 2),
    }


async def scheduled_delivery(
    fleet: Fleet, seed: Seed, server: Server, tag: int, subscribers: int, count: int
) -> dict:
    """`count` notifications scheduled by SQL to fall due within one second,
    to a tag of `subscribers` connected users, with a second app process
    (scheduler) against the same database: each delivered once, and how late
    (due → fanned out, in the database; due → on the socket)."""
    from .server import Server as ServerProcess

    second = ServerProcess(server.database_url)
    second.start()
    try:
        due = time.time() + 3.0
        offset = time.time() - time.monotonic()  # wall clock of a monotonic time
        fleet.arm(subscribers, timeout=60, per_user=count)
        await seed.conn.execute(
            "INSERT INTO notification (tag_id, message, send_at) "
            "SELECT $1, 'due ' || g, to_timestamp($2 + g::float8 / $3) "
            "FROM generate_series(0, $3 - 1) g",
            tag,
            due,
            count,
        )
        records = await asyncio.to_thread(fleet.collect)
    finally:
        second.close()
    rows = await seed.conn.fetch(
        "SELECT extract(epoch FROM delivered_at - send_at) AS late, recipients, "
        "(SELECT count(*) FROM user_notification i WHERE i.notification_id = n.id) AS items "
        "FROM notification n WHERE tag_id = $1",
        tag,
    )
    in_db = [float(r["late"]) * 1e9 for r in rows if r["late"] is not None]
    on_socket = [t / 1e9 + offset - (due + int(m.split()[1]) / count) for t, _, m in records]
    per_message = {}
    for _, _, m in records:
        per_message[m] = per_message.get(m, 0) + 1
    return {
        "notifications": count,
        "subscribers": subscribers,
        "delivered": len(in_db),
        "each_once": all(r["items"] == r["recipients"] == subscribers for r in rows)
        and len(rows) == count,
        "pushes": len(records),
        "pushed_twice": sum(1 for n in per_message.values() if n > subscribers),
        "late_db_p50_ms": ms(percentile(in_db, 0.5)),
        "late_db_p99_ms": ms(percentile(in_db, 0.99)),
        "late_socket_p50_ms": round(percentile(on_socket, 0.5) * 1000, 1),
        "late_socket_p99_ms": round(percentile(on_socket, 0.99) * 1000, 1),
    }


async def grouping(
    fleet: Fleet, seed: Seed, publisher: Publisher, tag: int, subscribers: int, count: int
) -> dict:
    """`count` POSTs with one group_key to a tag of `subscribers` connected
    users, back to back, against 50 ungrouped POSTs to the same tag: time per
    publish, inbox rows made (one per user, whatever the count) and pushes."""
    ungrouped = []
    fleet.arm(subscribers, timeout=120, per_user=50)
    for i in range(50):
        sent, answered, _ = await publisher.post(tag, f"plain #{i}")
        ungrouped.append(answered - sent)
    await asyncio.to_thread(fleet.collect)
    rows_before = await seed.conn.fetchval("SELECT count(*) FROM user_notification")
    grouped = []
    fleet.arm(subscribers, timeout=300, per_user=count)
    started = time.monotonic()
    for i in range(count):
        sent = time.monotonic_ns()
        status, body = await post_json(
            publisher.http,
            "/api/notifications/",
            {"message": f"{i + 1} new", "tag": tag, "group_key": "bench"},
        )
        grouped.append(time.monotonic_ns() - sent)
        if status != 201:
            raise RuntimeError(f"grouped publish answered {status}: {body}")
    took = time.monotonic() - started
    records = await asyncio.to_thread(fleet.collect)
    rows_made = await seed.conn.fetchval("SELECT count(*) FROM user_notification") - rows_before
    counts = await seed.conn.fetchval(
        "SELECT array_agg(DISTINCT count) FROM user_notification WHERE group_key = 'bench'"
    )
    return {
        "publishes": count,
        "subscribers": subscribers,
        "seconds": round(took, 1),
        "inbox_rows_made": rows_made,
        "item_counts": counts,
        "pushes": len(records),
        "grouped_post_p50_ms": ms(statistics.median(grouped)),
        "ungrouped_post_p50_ms": ms(statistics.median(ungrouped)),
    }


async def direct_vs_tag(
    seed: Seed, publisher: Publisher, users: list[int], rounds: int = 3
) -> dict:
    """One notification to `users` listed by id, against one to a tag they
    are all subscribed to: the POST's answer (every inbox row committed)."""
    tag = await seed.tag("direct-vs-tag", users)
    listed, tagged = [], []
    for r in range(rounds):
        sent = time.monotonic_ns()
        status, body = await post_json(
            publisher.http, "/api/notifications/", {"message": f"listed #{r}", "users": users}
        )
        listed.append(time.monotonic_ns() - sent)
        assert status == 201 and body["recipients"] == len(users), body
        sent, answered, body = await publisher.post(tag, f"tagged #{r}")
        tagged.append(answered - sent)
        assert body["recipients"] == len(users), body
    return {
        "users": len(users),
        "listed_post_ms": ms(statistics.median(listed)),
        "tag_post_ms": ms(statistics.median(tagged)),
        "runs_listed_ms": [ms(x) for x in listed],
        "runs_tag_ms": [ms(x) for x in tagged],
    }
