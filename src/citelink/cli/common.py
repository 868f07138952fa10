"""What the commands share: settings, the database, prompts, names."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from citelink.db.connection import connect, resolve
from citelink.db.migrations import migrate
from citelink.problems import Problem
from citelink.settings import Settings

# `citelink db-status` when the embedded server is not running (as pg_ctl status).
STATUS_NOT_RUNNING = 3


def command_name() -> str:
    """How to run citelink again, as this process was run: `citelink` when the
    PATH finds this very program, else the path it was started by."""
    program = sys.argv[0]
    if os.path.basename(program) != "citelink":
        return f"{sys.executable} -m citelink.cli"
    found = shutil.which("citelink")
    if found and os.path.realpath(found) == os.path.realpath(program):
        return "citelink"
    return program


def create_superuser_hint() -> str:
    return f"{command_name()} createsuperuser --username admin"


def load_settings(*, migrate_schema: bool = False) -> Settings:
    """Resolved settings; the embedded server is started (and migrated) on demand."""
    settings = Settings.from_env()
    embedded_db = settings.database_url is None
    settings = resolve(settings)
    if migrate_schema or embedded_db:
        migrate(settings.resolved_url)
    return settings


def run(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    async def main() -> int:
        async with asyncio.timeout(settings.db_connect_seconds):
            conn = await connect(settings.resolved_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def ask(value: str | None, prompt: str, flag: str, *, secret: bool = False) -> str:
    """`value` as given (not blank), or asked for at the terminal."""
    if value is not None:
        if not value.strip():
            raise Problem(f"{flag} must not be blank")
        return value
    if not sys.stdin.isatty():
        raise Problem(f"missing {prompt.lower()}: pass {flag} when not at a terminal")
    answer = getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}: ")
    if secret and getpass.getpass("Password (again): ") != answer:
        raise Problem("passwords do not match")
    if not answer.strip():
        raise Problem(f"{prompt.lower()} must not be blank")
    return answer
