"""`citelink serve`, `migrate`, `db-*`, `publish` and `listen`."""

from __future__ import annotations

import argparse

import asyncpg
import orjson

from citelink import problems
from citelink.cli.common import (
    STATUS_NOT_RUNNING,
    command_name,
    create_superuser_hint,
    load_settings,
    run,
)
from citelink.cli.tags import create_tag_hint
from citelink.db import embedded
from citelink.db.connection import resolve
from citelink.db.migrations import migrate
from citelink.db.queries import Q
from citelink.problems import Problem
from citelink.settings import Settings

# Commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from citelink.server import serving

    return serving.serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        keep_db=args.keep_db,
        forwarded_allow_ips=args.forwarded_allow_ips,
        first_run_hint=(
            f"no users yet; create a staff user to sign in with:\n    {create_superuser_hint()}"
            f"\nthen give them a first tag and notification:\n    {command_name()} demo "
            "--username admin"
        ),
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = resolve(Settings.from_env())
    applied = migrate(settings.resolved_url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_db_url(args: argparse.Namespace) -> int:
    print(load_settings().database_url)
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.database_url:
        where = problems.database_location(settings.database_url)
        print(f"CITELINK_DATABASE_URL is set: the database {where}, not an embedded one")
        return 0
    status = embedded.status(settings.data_dir)
    if status is not None:
        print(f"running (pid {status.pid}), data in {status.pgdata}")
        return 0
    if embedded.initialised(settings.data_dir):
        pgdata = settings.data_dir.resolve() / "pgdata"
        print(f"not running; data in {pgdata} (any command starts it)")
    else:
        print(f"no embedded database in {settings.data_dir} yet (the first command creates it)")
    return STATUS_NOT_RUNNING


def cmd_db_stop(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.database_url:
        raise Problem("CITELINK_DATABASE_URL is set: citelink only stops its embedded PostgreSQL")
    pgdata = settings.data_dir.resolve() / "pgdata"
    if embedded.stop(settings.data_dir):
        print(f"stopped the embedded PostgreSQL ({pgdata})")
    else:
        print(f"the embedded PostgreSQL is not running ({pgdata})")
    return 0


def _message(text: str, settings: Settings) -> str:
    """The API's rules for a message (the database's CHECK holds the outer bound)."""
    largest = settings.max_message_chars
    if not text.strip() or len(text) > largest:
        raise Problem(
            f"the message must be 1 to {largest:,} characters and not blank, got {len(text):,}"
        )
    return text


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        raise Problem(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem("--data must be a JSON object")
    settings = load_settings()
    message = _message(args.message, settings)

    async def work(conn: asyncpg.Connection) -> int:
        actor = await conn.fetchrow(Q.user_by_username, args.actor)
        if actor is None or not actor["is_active"] or not actor["is_staff"]:
            raise Problem(f"--as {args.actor}: no active staff user of that name")
        tag_id = await conn.fetchval(Q.tag_id_by_name, args.tag)
        if tag_id is None:
            raise Problem(f"no tag {args.tag!r}; create it with: {create_tag_hint(args.tag)}")
        row = await conn.fetchrow(
            Q.publish, tag_id, None, message, data, None, None, None, None, None, actor["id"]
        )
        assert row is not None  # citelink_publish answers the notification it made
        print(f"published notification {row['id']} to {row['recipients']} recipient(s)")
        return 0

    return run(settings, work)


def cmd_listen(args: argparse.Namespace) -> int:
    from citelink.cli import listen

    return listen.run(args.url, args.username, args.password, args.token, args.after, args.retries)
