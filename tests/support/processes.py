"""`citelink serve` as a real process: started on a free port, its output
collected, stopped with SIGTERM (unless the test killed it already)."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.data import SECRET_KEY
from tests.support.wsclient import Address

# The banner, printed (or logged, as JSON) once the port is bound.
STARTED = re.compile(rb"serving on http://127\.0\.0\.1:(\d+)/")


class Serve:
    """A `citelink serve` subprocess; its output (stdout and stderr) is collected."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, output: bytearray):
        self.process, self.output = process, output
        self.server = Address(port)


@asynccontextmanager
async def citelink_serve(
    db_url: str, data_dir: Path, *args: str, open_files: int | None = None, **settings: str
) -> AsyncIterator[Serve]:
    """`citelink serve` on a free port, with more `args` (`--workers 2`);
    `settings` are CITELINK_* variables (`pool_size="4"` sets CITELINK_POOL_SIZE);
    `open_files` lowers its limit of open files (`ulimit -n`)."""

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    env = os.environ | {
        "CITELINK_DATABASE_URL": db_url,
        "CITELINK_SECRET_KEY": SECRET_KEY,
        "CITELINK_DATA_DIR": str(data_dir),
        # Probes would replace the LISTEN as the listener's last query (counted
        # in test_ws_processes.py).
        "CITELINK_LISTENER_PROBE_SECONDS": "600",
    }
    env |= {f"CITELINK_{name.upper()}": value for name, value in settings.items()}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "citelink.cli",
        "serve",
        "--port",
        "0",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=limit_files,
    )
    assert process.stdout
    output = bytearray()
    async with asyncio.timeout(30):
        while not (started := STARTED.search(output)):
            line = await process.stdout.readline()
            assert line, output.decode()
            output += line

    async def collect() -> None:
        assert process.stdout
        while line := await process.stdout.readline():
            output.extend(line)

    collector = asyncio.create_task(collect())
    try:
        yield Serve(process, int(started.group(1)), output)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
        await collector


def citelink(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "citelink.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
