"""The `citelink` command line: serve, the embedded database, users, publishing, events.

Errors a person can act on are one line on stderr and a non-zero exit
(citelink/failures.py decides which and says them); `--debug` or
CITELINK_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from . import api_keys, database, embedded, failures
from .failures import Problem
from .migrations import migrate
from .queries import Q
from .settings import Settings

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


def _create_superuser_hint() -> str:
    return f"{command_name()} createsuperuser --username admin"


def _settings(*, migrate_schema: bool = False) -> Settings:
    """Resolved settings; the embedded server is started (and migrated) on demand."""
    settings = Settings.from_env()
    embedded_db = settings.database_url is None
    settings = database.resolve(settings)
    if migrate_schema or embedded_db:
        migrate(settings.database_url)
    return settings


def _run(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    async def main() -> int:
        async with asyncio.timeout(settings.db_connect_seconds):
            conn = await database.connect(settings.database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _ask(value: str | None, prompt: str, flag: str, *, secret: bool = False) -> str:
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


# Commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from . import serving

    return serving.serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        keep_db=args.keep_db,
        forwarded_allow_ips=args.forwarded_allow_ips,
        first_run_hint=(
            f"no users yet; create a staff user to sign in with:\n    {_create_superuser_hint()}"
        ),
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = database.resolve(Settings.from_env())
    applied = migrate(settings.database_url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_db_url(args: argparse.Namespace) -> int:
    print(_settings().database_url)
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.database_url:
        where = failures.database_location(settings.database_url)
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


def _hash(password: str) -> str:
    # Imported here: the module hashes a dummy password when loaded (argon2,
    # 0.1 s), which commands that need no password should not wait for.
    from .passwords import hash_password

    return hash_password(password)


def _create_user(args: argparse.Namespace, staff: bool) -> int:
    username = _ask(args.username, "Username", "--username")
    password = _ask(args.password, "Password", "--password", secret=True)
    settings = _settings()

    async def work(conn: asyncpg.Connection) -> int:
        try:
            row = await conn.fetchrow(Q.create_user, username, _hash(password), staff)
        except asyncpg.UniqueViolationError:
            raise Problem(f"user {username!r} already exists") from None
        except asyncpg.CheckViolationError:
            raise Problem("--username: 1-150 letters, digits and @.+-_ only") from None
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
        rows = await conn.fetch(Q.list_users)
        if not rows:
            print(f"no users yet; create one with: {_create_superuser_hint()}", file=sys.stderr)
        for row in rows:
            flags = ("staff " if row["is_staff"] else "") + ("" if row["is_active"] else "inactive")
            print(f"{row['id']:>6}  {row['username']:<30} {flags.strip()}")
        return 0

    return _run(_settings(), work)


def _update_user(args: argparse.Namespace, query: str, value: object, done: str) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        if await conn.fetchval(query, args.username, value) is None:
            raise Problem(f"no user {args.username!r} (see: {command_name()} user list)")
        print(f"{args.username}: {done}")
        return 0

    return _run(_settings(), work)


def cmd_user_set_password(args: argparse.Namespace) -> int:
    password = _ask(args.password, "Password", "--password", secret=True)
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
        row = await conn.fetchrow(Q.create_api_key, name, made.prefix, made.digest, scopes, None)
        # The key alone on stdout (for a script to capture), the note apart.
        print(made.key)
        print(
            f"API key {row['id']} {name!r} ({', '.join(scopes)}); shown this once: store it now",
            file=sys.stderr,
        )
        return 0

    return _run(_settings(), work)


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

    return _run(_settings(), work)


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

    return _run(_settings(), work)


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
    settings = _settings()
    message = _message(args.message, settings)

    async def work(conn: asyncpg.Connection) -> int:
        actor = await conn.fetchrow(Q.user_by_username, args.actor)
        if actor is None or not actor["is_active"] or not actor["is_staff"]:
            raise Problem(f"--as {args.actor}: no active staff user of that name")
        tag_id = await conn.fetchval(Q.tag_id_by_name, args.tag)
        if tag_id is None:
            raise Problem(f"no tag {args.tag!r}")
        row = await conn.fetchrow(
            Q.publish, tag_id, None, message, data, None, None, None, None, None, actor["id"]
        )
        print(f"published notification {row['id']} to {row['recipients']} recipient(s)")
        return 0

    return _run(settings, work)


def cmd_listen(args: argparse.Namespace) -> int:
    from . import ws_client

    return ws_client.run(
        args.url, args.username, args.password, args.token, args.after, args.retries
    )


# Parser ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line that points at --help."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _number(low: int, high: int, note: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a number from {low} to {high}{note}, got {text!r}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="citelink",
        description="Real-time notifications. Without CITELINK_DATABASE_URL every command "
        "uses an embedded PostgreSQL kept in CITELINK_DATA_DIR (default ./.citelink).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or CITELINK_DEBUG=1)"
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
        type=_number(0, 65535, " (0: any free port)"),
        help="port to bind (default $CITELINK_PORT or 8000)",
    )
    serve.add_argument(
        "--workers",
        type=_number(1, 64),
        help="processes serving the port, each with its own pool and LISTEN connection "
        "(default $CITELINK_WORKERS or 1)",
    )
    serve.add_argument(
        "--keep-db",
        action="store_true",
        help="leave the embedded PostgreSQL running on exit if this command started it",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies whose X-Forwarded-* headers are trusted (default 127.0.0.1; '*' for any)",
    )

    command("migrate", cmd_migrate, "apply pending database migrations")
    command("db-url", cmd_db_url, "print the URL of the database in use (for psql)")
    command(
        "db-status",
        cmd_db_status,
        "say whether the embedded PostgreSQL is running (exit status 3 when not)",
    )
    command(
        "db-stop",
        cmd_db_stop,
        "stop the embedded PostgreSQL (its clients, a running serve included, are disconnected)",
    )

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

    apikey = commands.add_parser(
        "apikey", help="manage API keys for services", description="manage API keys for services"
    )
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    make = command(
        "create",
        cmd_apikey_create,
        "make an API key and print it (shown this once)",
        apikey_commands,
    )
    make.add_argument("name", help="what the key is for")
    make.add_argument(
        "--scope",
        action="append",
        choices=api_keys.SCOPES,
        help="publish (notifications, tags, subscriptions, users by external id) or admin "
        "(everything staff may do); repeat for both (default publish)",
    )
    command("list", cmd_apikey_list, "list API keys (prefixes only)", apikey_commands)
    revoke = command("revoke", cmd_apikey_revoke, "revoke an API key at once", apikey_commands)
    revoke.add_argument("key", metavar="ID-or-PREFIX", help="as `apikey list` shows it")

    publish = command("publish", cmd_publish, "post a notification to every subscriber of a tag")
    publish.add_argument(
        "--as",
        dest="actor",
        required=True,
        metavar="USERNAME",
        help="the staff user publishing: the notification's author and audit actor",
    )
    publish.add_argument("--tag", required=True, help="tag name")
    publish.add_argument("--data", default="{}", help="extra JSON object (default {})")
    publish.add_argument("message")

    listen = command(
        "listen",
        cmd_listen,
        "print a user's live events as JSON lines (a WebSocket client of a running server)",
    )
    listen.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the server, http(s)://host:port; host:port means http (default "
        "http://127.0.0.1:8000)",
    )
    listen.add_argument("--username", help="sign in as this user (prompted for when missing)")
    listen.add_argument(
        "--password", help="prompted for when missing (or read from stdin when not a terminal)"
    )
    listen.add_argument("--token", help="an access token instead of a username and password")
    listen.add_argument("--after", type=int, help="first replay the items with a higher id")
    listen.add_argument(
        "--retries",
        type=_number(0, 1000),
        default=10,
        help="failed attempts in a row to reach the server before giving up (default 10, "
        "about 30 s; the count starts again once connected)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("CITELINK_DEBUG", "") not in ("", "0")
    try:
        status = args.func(args)
        sys.stdout.flush()  # a reader gone away is noticed here, not at exit
        return status
    except (Exception, KeyboardInterrupt) as exc:
        return failures.report(exc, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
