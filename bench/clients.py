"""Socket client processes: each holds many WebSockets and timestamps frames.

They run as separate processes (multiprocessing, spawn) so the server's core
is not shared with client work inside one interpreter. Times are
time.monotonic_ns(), which is one system-wide clock on Linux, so a send time
taken in the main process and a receive time taken here compare directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

import orjson
import websockets


class ClientProcess:
    """Handle, in the main process, on one client process."""

    def __init__(self, ws_base: str, tokens: list[str]):
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.size = len(tokens)
        # CPU seconds the process used during the last recording (and in all).
        self.cpu_used = self.cpu_seen = 0.0
        self.proc = ctx.Process(target=_run, args=(ws_base, tokens, child), daemon=True)
        self.proc.start()

    def wait_ready(self, timeout: float = 300) -> None:
        if not self.pipe.poll(timeout):
            raise TimeoutError("client process did not connect its sockets")
        status = self.pipe.recv()
        if status != "ready":
            raise RuntimeError(f"client failed: {status}")

    def arm(self, expected: int | None, timeout: float) -> None:
        """Start recording notification frames, until `expected` arrived or
        `timeout` passed (None: for the whole timeout); returns once armed."""
        self.pipe.send(("expect", expected, timeout))
        assert self.pipe.recv() == "armed"

    def records(self) -> list[tuple[int, int, str]]:
        """(receive time ns, socket index, message) of every notification frame
        since `arm`, once `expected` arrived or the timeout passed."""
        records, cpu = self.pipe.recv()
        self.cpu_used, self.cpu_seen = cpu - self.cpu_seen, cpu
        return records

    def close(self) -> None:
        self.pipe.send(("close",))
        self.proc.join(30)


def _run(ws_base: str, tokens: list[str], pipe: Connection) -> None:
    try:
        asyncio.run(_main(ws_base, tokens, pipe))
    except Exception as exc:  # reported to the main process, which stops the run
        pipe.send(f"{type(exc).__name__}: {exc}")


async def _main(ws_base: str, tokens: list[str], pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    records: list[tuple[int, int, str]] = []
    state = {"expected": 0, "recording": False}
    complete = asyncio.Event()
    opening = asyncio.Semaphore(64)

    async def hold(index: int, token: str, opened: asyncio.Future) -> None:
        async with opening:
            try:
                ws = await websockets.connect(
                    f"{ws_base}/ws/notifications/?token={token}",
                    subprotocols=["citelink.v1"],
                    max_size=None,
                    compression=None,
                    ping_interval=None,
                    open_timeout=120,
                )
            except Exception as exc:
                opened.set_exception(exc)
                return
        opened.set_result(ws)
        async for raw in ws:
            now = time.monotonic_ns()
            if not state["recording"]:
                continue
            frame = orjson.loads(raw)
            if frame.get("type") == "notification":
                records.append((now, index, frame["message"]))
                if state["expected"] and len(records) >= state["expected"]:
                    complete.set()

    futures = [loop.create_future() for _ in tokens]
    tasks = [
        asyncio.create_task(hold(i, token, future))
        for i, (token, future) in enumerate(zip(tokens, futures, strict=True))
    ]
    sockets = await asyncio.gather(*futures)
    pipe.send("ready")

    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "close":
            break
        _, expected, timeout = command
        records.clear()
        complete.clear()
        state.update(expected=expected, recording=True)
        pipe.send("armed")
        if expected is None:  # record everything for `timeout` seconds
            await asyncio.sleep(timeout)
        elif expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(complete.wait(), timeout)
        state["recording"] = False
        pipe.send((list(records), time.process_time()))

    for ws in sockets:
        await ws.close()
    for task in tasks:
        task.cancel()
