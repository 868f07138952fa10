"""The `citelink` command line: serve, migrate, users, publishing, events."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from . import database, passwords
from .migrations import migrate
from .queries import Q
from .settings import Settings


def _settings(*, migrate_schema: bool = False) -> Settings:
    """Resolved settings; the embedded server is started (and migrated) on demand."""
    settings = Settings.from_env()
    embedded = settings.database_url is None
    settings = database.resolve(settings)
    if migrate_schema or embedded:
        migrate(settings.database_url)
    return settings


def _run(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    async def main() -> int:
        conn = await database.connect(settings.database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _ask(value: str | None, prompt: str, *, secret: bool = False) -> str:
    if value:
        return value
    if not sys.stdin.isatty():
        raise SystemExit(f"missing {prompt.lower()} (pass it as a flag when not interactive)")
    answer = getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}: ")
    if secret and getpass.getpass("Password (again): ") != answer:
        raise SystemExit("passwords do not match")
    if not answer:
        raise SystemExit(f"{prompt.lower()} must not be empty")
    return answer


# Commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import create_server
    from .logs import install_token_filter, log_config

    settings = _settings(migrate_schema=True)
    server = create_server(
        settings,
        args.host,
        args.port,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        log_config=log_config(),
    )
    install_token_filter()
    print(f"citelink: serving on http://{args.host}:{args.port}/", flush=True)
    if not _run(settings, lambda conn: conn.fetchval(Q.count_users)):
        print(
            "citelink: no users yet; create a staff user to sign in with:\n"
            "    citelink createsuperuser --username admin",
            flush=True,
        )
    server.run()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = database.resolve(Settings.from_env())
    applied = migrate(settings.database_url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_db_url(args: argparse.Namespace) -> int:
    print(_settings().database_url)
    return 0


def _create_user(args: argparse.Namespace, staff: bool) -> int:
    settings = _settings()
    username = _ask(args.username, "Username")
    password = _ask(args.password, "Password", secret=True)

    async def work(conn: asyncpg.Connection) -> int:
        try:
            row = await conn.fetchrow(
                Q.create_user, username, passwords.hash_password(password), staff
            )
        except asyncpg.UniqueViolationError:
            print(f"user {username!r} already exists", file=sys.stderr)
            return 1
        except asyncpg.CheckViolationError:
            print("username: 1-150 letters, digits and @.+-_ only", file=sys.stderr)
            return 1
        kind = "staff user" if staff else "user"
        print(f"created {kind} {row['username']!r} (id {row['id']})")
        return 0

    return _run(settings, work)


def cmd_createsuperuser(args: argparse.Namespace) -> int:
    return _create_user(args, staff=True)


def cmd_user_create(args: argparse.Namespace) -> int:
    return _create_user(args, staff=args.staff)


def cmd_user_list(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for row in await conn.fetch(Q.list_users):
            flags = ("staff " if row["is_staff"] else "") + ("" if row["is_active"] else "inactive")
            print(f"{row['id']:>6}  {row['username']:<30} {flags.strip()}")
        return 0

    return _run(_settings(), work)


def _update_user(args: argparse.Namespace, query: str, value: object, done: str) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        if await conn.fetchval(query, args.username, value) is None:
            print(f"no user {args.username!r}", file=sys.stderr)
            return 1
        print(f"{args.username}: {done}")
        return 0

    return _run(_settings(), work)


def cmd_user_set_password(args: argparse.Namespace) -> int:
    password = _ask(args.password, "Password", secret=True)
    return _update_user(args, Q.set_password, passwords.hash_password(password), "password set")


def cmd_user_deactivate(args: argparse.Namespace) -> int:
    return _update_user(args, Q.set_active, False, "deactivated (tokens refused from now on)")


def cmd_user_activate(args: argparse.Namespace) -> int:
    return _update_user(args, Q.set_active, True, "activated")


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit("--data must be a JSON object")

    async def work(conn: asyncpg.Connection) -> int:
        tag_id = await conn.fetchval(Q.tag_id_by_name, args.tag)
        if tag_id is None:
            print(f"no tag {args.tag!r}", file=sys.stderr)
            return 1
        row = await conn.fetchrow(Q.publish, tag_id, args.message, data, None)
        print(f"published notification {row['id']} to {row['recipients']} recipient(s)")
        return 0

    return _run(_settings(), work)


def cmd_listen(args: argparse.Namespace) -> int:
    from . import ws_client

    return ws_client.run(args.url, args.username, args.password, args.token, args.after)


# Parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citelink",
        description="Real-time notifications. Without CITELINK_DATABASE_URL every command "
        "uses an embedded PostgreSQL kept in CITELINK_DATA_DIR (default ./.citelink).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable, help: str, parent=commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    serve = command("serve", cmd_serve, "migrate, then serve HTTP and WebSocket on one port")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CITELINK_PORT") or 8000),
        help="port to bind (default $CITELINK_PORT or 8000)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies whose X-Forwarded-* headers are trusted (default 127.0.0.1; '*' for any)",
    )

    command("migrate", cmd_migrate, "apply pending database migrations")
    command("db-url", cmd_db_url, "print the URL of the database in use (for psql)")

    superuser = command("createsuperuser", cmd_createsuperuser, "create a staff user")
    superuser.add_argument("--username", help="prompted for when missing")
    superuser.add_argument("--password", help="prompted for when missing")

    user = commands.add_parser("user", help="manage users", description="manage users")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = command("create", cmd_user_create, "create a user", user_commands)
    create.add_argument("--username", help="prompted for when missing")
    create.add_argument("--password", help="prompted for when missing")
    create.add_argument("--staff", action="store_true", help="may publish and administer")
    command("list", cmd_user_list, "list users", user_commands)
    set_password = command("set-password", cmd_user_set_password, "set a password", user_commands)
    set_password.add_argument("--username", required=True)
    set_password.add_argument("--password", help="prompted for when missing")
    for name, func, text in (
        ("deactivate", cmd_user_deactivate, "refuse a user's logins and tokens"),
        ("activate", cmd_user_activate, "allow a deactivated user again"),
    ):
        command(name, func, text, user_commands).add_argument("--username", required=True)

    publish = command("publish", cmd_publish, "post a notification to every subscriber of a tag")
    publish.add_argument("--tag", required=True, help="tag name")
    publish.add_argument("--data", default="{}", help="extra JSON object (default {})")
    publish.add_argument("message")

    listen = command(
        "listen",
        cmd_listen,
        "print a user's live events as JSON lines (a WebSocket client of a running server)",
    )
    listen.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)"
    )
    listen.add_argument("--username", help="sign in as this user (prompted for when missing)")
    listen.add_argument(
        "--password", help="prompted for when missing (or read from stdin when not a terminal)"
    )
    listen.add_argument("--token", help="an access token instead of a username and password")
    listen.add_argument("--after", type=int, help="first replay the items with a higher id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
