"""Where a fan-out's time goes in the server: `python -m bench.profile_fan_out`.

A fresh server on a fresh embedded database, 1,000 subscribers of one tag
each holding a socket (two client processes), fan-outs to all of them one
after the other for `--seconds`, while py-spy samples the server process.
Prints the fan-out's median (POST sent → last socket, and the POST's own
answer: every inbox row committed) and the functions the server spent its
samples in (py-spy must be installed: `pip install py-spy`; as root, or
with ptrace allowed). Only loopback; everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import scenarios
from .clients import ClientProcess
from .scenarios import Fleet, Publisher
from .server import Seed, Server


def py_spy() -> str:
    """py-spy beside this Python (a virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def start_py_spy(pid: int, seconds: float, raw: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` for `seconds` into `raw` (its raw format)."""
    return subprocess.Popen(
        [
            *(py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds))),
            *("--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(seconds: float, raw: Path) -> tuple[list[float], list[float]]:
    server = Server()
    seed = await Seed.connect(server.database_url)
    try:
        ids = await seed.users("fan", 1_001)
        await seed.conn.execute("UPDATE users SET is_staff = true WHERE id = $1", ids[0])
        tag = await seed.tag("fan", ids[1:])
        await seed.conn.execute("VACUUM ANALYZE")
        server.start()
        assert server.proc is not None
        tokens = [server.token(u) for u in ids[1:]]
        fleet = Fleet([ClientProcess(server.ws, tokens[k::2]) for k in range(2)])
        publisher = Publisher(server, ids[0])
        try:
            for client in fleet.clients:
                client.wait_ready()
            await scenarios.fan_out(fleet, publisher, tag, 1_000)  # warm
            spy = start_py_spy(server.proc.pid, seconds + 3, raw)
            lasts, commits = [], []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                result = await scenarios.fan_out(fleet, publisher, tag, 1_000)
                lasts.extend(result["runs_last_socket_ms"])
                commits.append(result["commit_ms"])
            await asyncio.to_thread(spy.wait)
            return lasts, commits
        finally:
            await publisher.close()
            for client in fleet.clients:
                client.close()
    finally:
        await seed.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        lasts, commits = asyncio.run(run(args.seconds, raw))
        own: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            own[stack.split(";")[-1]] += int(count)
    samples = sum(own.values())
    print(
        f"fan-out to 1,000 sockets: last socket p50 {statistics.median(lasts):.1f} ms "
        f"({len(lasts)} runs), the POST's answer p50 {statistics.median(commits):.1f} ms"
    )
    # py-spy leaves out the time the server's thread sleeps (the event loop idle).
    print(f"{samples} samples of the server at work; where (own time):")
    for frame, count in own.most_common(args.top):
        print(f"{100 * count / samples:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
