"""`citelink createsuperuser`, `user ...` and `apikey ...`."""

from __future__ import annotations

import argparse
import shlex
import sys

import asyncpg

from citelink.cli.common import ask, command_name, create_superuser_hint, load_settings, run
from citelink.db.queries import Q
from citelink.identity import api_keys
from citelink.problems import Problem


def _hash(password: str) -> str:
    # Imported here: the module hashes a dummy password when loaded (argon2,
    # 0.1 s), which commands that need no password should not wait for.
    from citelink.identity.passwords import hash_password

    return hash_password(password)


def _create_user(args: argparse.Namespace, staff: bool) -> int:
    username = ask(args.username, "Username", "--username")
    password = ask(args.password, "Password", "--password", secret=True)
    settings = load_settings()

    async def work(conn: asyncpg.Connection) -> int:
        try:
            row = await conn.fetchrow(Q.create_user, username, _hash(password), staff)
        except asyncpg.UniqueViolationError:
            raise Problem(f"user {username!r} already exists") from None
        except asyncpg.CheckViolationError:
            raise Problem("--username: 1-150 letters, digits and @.+-_ only") from None
        assert row is not None  # INSERT ... RETURNING: the row made
        kind = "staff user" if staff else "user"
        print(f"created {kind} {row['username']!r} (id {row['id']})")
        demo = f"{command_name()} demo --username {shlex.quote(row['username'])}"
        print(f"a first tag and notification for them: {demo}", file=sys.stderr)
        return 0

    return run(settings, work)


def cmd_createsuperuser(args: argparse.Namespace) -> int:
    return _create_user(args, staff=True)


def cmd_user_create(args: argparse.Namespace) -> int:
    return _create_user(args, staff=args.staff)


def cmd_user_list(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(Q.list_users)
        if not rows:
            print(f"no users yet; create one with: {create_superuser_hint()}", file=sys.stderr)
        for row in rows:
            flags = ("staff " if row["is_staff"] else "") + ("" if row["is_active"] else "inactive")
            print(f"{row['id']:>6}  {row['username']:<30} {flags.strip()}")
        return 0

    return run(load_settings(), work)


def _update_user(args: argparse.Namespace, query: str, value: object, done: str) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        if await conn.fetchval(query, args.username, value) is None:
            raise Problem(f"no user {args.username!r} (see: {command_name()} user list)")
        print(f"{args.username}: {done}")
        return 0

    return run(load_settings(), work)


def cmd_user_set_password(args: argparse.Namespace) -> int:
    password = ask(args.password, "Password", "--password", secret=True)
    return _update_user(args, Q.set_password, _hash(password), "password set")


def cmd_user_deactivate(args: argparse.Namespace) -> int:
    return _update_user(args, Q.set_active, False, "deactivated (tokens refused from now on)")


def cmd_user_activate(args: argparse.Namespace) -> int:
    return _update_user(args, Q.set_active, True, "activated")


def cmd_apikey_create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 100:
        raise Problem("an API key's name is 1 to 100 characters")
    made = api_keys.new_key()
    scopes = sorted(set(args.scope or ["publish"]))

    async def work(conn: asyncpg.Connection) -> int:
        row = await conn.fetchrow(
            Q.create_api_key, name, made.prefix, made.digest, scopes, None, None
        )
        assert row is not None  # INSERT ... RETURNING: the row made
        # The key alone on stdout (for a script to capture), the note apart.
        print(made.key)
        print(
            f"API key {row['id']} {name!r} ({', '.join(scopes)}); shown this once: store it now",
            file=sys.stderr,
        )
        return 0

    return run(load_settings(), work)


def cmd_apikey_list(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(Q.list_api_keys)
        if not rows:
            print(
                f"no API keys yet; make one with: {command_name()} apikey create NAME",
                file=sys.stderr,
            )
        for row in rows:
            revoked = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else ""
            print(
                f"{row['id']:>6}  cl_{row['prefix']}_...  {row['name']:<30} "
                f"{','.join(row['scopes']):<14} {revoked}".rstrip()
            )
        return 0

    return run(load_settings(), work)


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    given = args.key.strip()
    key_id = int(given) if given.isdigit() and len(given) < 19 else None
    # A prefix as listed (cl_<prefix>_...), bare, or inside the whole key.
    prefix = given.removeprefix("cl_").split("_")[0].rstrip(".")

    async def work(conn: asyncpg.Connection) -> int:
        row = await conn.fetchrow(Q.revoke_api_key, key_id, prefix)
        if row is None:
            raise Problem(f"no API key {given!r} (see: {command_name()} apikey list)")
        print(f"API key {row['id']} {row['name']!r}: revoked (refused from now on)")
        return 0

    return run(load_settings(), work)
