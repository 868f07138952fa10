"""`citelink tag ...` and `citelink demo`: tags from the shell, and a first
tag, subscription and notification so that a new inbox is not empty."""

from __future__ import annotations

import argparse
import shlex
import sys

import asyncpg

from citelink.cli.common import command_name, load_settings, run
from citelink.db.queries import Q
from citelink.problems import Problem

DEMO_TAG = "welcome"


def create_tag_hint(name: str) -> str:
    return f"{command_name()} tag create {shlex.quote(name)}"


def cmd_tag_create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 100:
        raise Problem("a tag's name is 1 to 100 characters")

    async def work(conn: asyncpg.Connection) -> int:
        try:
            row = await conn.fetchrow(Q.create_tag, name, False)
        except asyncpg.UniqueViolationError:
            raise Problem(f"tag {name!r} already exists") from None
        assert row is not None  # INSERT ... RETURNING
        print(f"created tag {row['name']!r} (id {row['id']})")
        return 0

    return run(load_settings(), work)


def cmd_tag_list(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(Q.list_tags)
        if not rows:
            print(f"no tags yet; create one with: {create_tag_hint('NAME')}", file=sys.stderr)
        for row in rows:
            print(f"{row['id']:>6}  {row['name']:<30} {row['subscribers']} subscriber(s)")
        return 0

    return run(load_settings(), work)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def work(conn: asyncpg.Connection) -> int:
        user = await conn.fetchrow(Q.user_by_username, args.username)
        if user is None:
            raise Problem(f"no user {args.username!r} (see: {command_name()} user list)")
        name = user["username"]
        tag = await conn.fetchrow(Q.ensure_tag, DEMO_TAG)
        assert tag is not None  # made if missing
        print(f"tag {DEMO_TAG!r}: {'created' if tag['created'] else 'already there'}")
        subscribed = await conn.fetchrow(Q.create_subscription, user["id"], tag["id"], "live")
        print(f"{name}: {'subscribed' if subscribed else 'already subscribed'} to {DEMO_TAG!r}")
        # Once per user: a second run publishes nothing more.
        if await conn.fetchval(Q.has_item_on_tag, user["id"], tag["id"]):
            print(f"{name}: already has a notification on {DEMO_TAG!r}")
            return 0
        publish = f"{command_name()} publish --as {shlex.quote(name)} --tag {DEMO_TAG} 'Hello'"
        message = (
            f"Welcome to citelink! This notification was published on the tag {DEMO_TAG!r}, "
            f"which {name} is subscribed to. Publish another from the Publish tab, or with: "
            f"{publish}"
        )
        actor = user["id"] if user["is_staff"] else None
        row = await conn.fetchrow(
            Q.publish, tag["id"], None, message, {}, None, None, None, None, None, actor
        )
        assert row is not None  # citelink_publish answers the notification
        print(f"published a welcome notification to {row['recipients']} recipient(s)")
        return 0

    return run(settings, work)
