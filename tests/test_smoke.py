"""The deployment smoke: scripts/smoke_client.py against two local servers on
one database (what scripts/docker-smoke runs against its containers), and
scripts/docker-smoke itself where a Docker engine runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.servers import start_server


async def test_smoke_client_publishes_through_one_server_and_hears_it_on_another(
    settings, make_user
):
    await make_user("admin", staff=True, password="smoke-pw")
    first, second = await start_server(settings), await start_server(settings)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "scripts" / "smoke_client.py"),
            *("--publish-via", first.http, "--listen-via", second.http),
            *("--user", "admin", "--password", "smoke-pw"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
    finally:
        await first.stop()
        await second.stop()
    assert process.returncode == 0, output
    assert output.startswith(f"ok: published via {first.http}, received via {second.http} in ")


def docker_engine_runs() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(
    not docker_engine_runs(),
    reason="no Docker engine runs here: scripts/docker-smoke builds and runs the image in one",
)
@pytest.mark.timeout(900)
def test_docker_smoke():
    """The image built and run (--network host): two containers on one
    PostgreSQL 15, nginx in front, compose.yml valid (about 45 s once built)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-smoke")],
        env=os.environ | {"PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== all checks passed" in result.stdout
    assert result.stdout.count("ok: published via") == 3
