"""A real uvicorn serving the app in the test's event loop."""

from __future__ import annotations

import asyncio

import uvicorn

from citelink.server.uvicorn_server import create_server
from citelink.settings import Settings


class RunningServer:
    """A real uvicorn serving the app in this event loop."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task, port: int):
        self.server, self.task, self.port = server, task, port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_server(settings: Settings, port: int = 0) -> RunningServer:
    server = create_server(
        settings, "127.0.0.1", port, log_level="warning", timeout_graceful_shutdown=5
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server, task, port)
