"""The argument parser: every command, its flags and help."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from citelink.cli import accounts, service, tags
from citelink.identity import api_keys


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
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
        "--debug",
        action="store_true",
        help="show the traceback of an error, and every retry in serve's log (or CITELINK_DEBUG=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        parent: argparse._SubParsersAction[_Parser] = commands,
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    serve = command(
        "serve", service.cmd_serve, "migrate, then serve HTTP and WebSocket on one port"
    )
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

    command("migrate", service.cmd_migrate, "apply pending database migrations")
    command("db-url", service.cmd_db_url, "print the URL of the database in use (for psql)")
    command(
        "db-status",
        service.cmd_db_status,
        "say whether the embedded PostgreSQL is running (exit status 3 when not)",
    )
    command(
        "db-stop",
        service.cmd_db_stop,
        "stop the embedded PostgreSQL (its clients, a running serve included, are disconnected)",
    )

    superuser = command("createsuperuser", accounts.cmd_createsuperuser, "create a staff user")
    superuser.add_argument("--username", help="prompted for when missing")
    superuser.add_argument("--password", help="prompted for when missing")

    user = commands.add_parser("user", help="manage users", description="manage users")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = command("create", accounts.cmd_user_create, "create a user", user_commands)
    create.add_argument("--username", help="prompted for when missing")
    create.add_argument("--password", help="prompted for when missing")
    create.add_argument("--staff", action="store_true", help="may publish and administer")
    command("list", accounts.cmd_user_list, "list users", user_commands)
    set_password = command(
        "set-password", accounts.cmd_user_set_password, "set a password", user_commands
    )
    set_password.add_argument("--username", required=True)
    set_password.add_argument("--password", help="prompted for when missing")
    for name, func, text in (
        ("deactivate", accounts.cmd_user_deactivate, "refuse a user's logins and tokens"),
        ("activate", accounts.cmd_user_activate, "allow a deactivated user again"),
    ):
        command(name, func, text, user_commands).add_argument("--username", required=True)

    apikey = commands.add_parser(
        "apikey", help="manage API keys for services", description="manage API keys for services"
    )
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    make = command(
        "create",
        accounts.cmd_apikey_create,
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
    command("list", accounts.cmd_apikey_list, "list API keys (prefixes only)", apikey_commands)
    revoke = command(
        "revoke", accounts.cmd_apikey_revoke, "revoke an API key at once", apikey_commands
    )
    revoke.add_argument("key", metavar="ID-or-PREFIX", help="as `apikey list` shows it")

    tag = commands.add_parser("tag", help="manage tags", description="manage tags")
    tag_commands = tag.add_subparsers(dest="tag_command", required=True, metavar="ACTION")
    command("create", tags.cmd_tag_create, "create a tag", tag_commands).add_argument("name")
    command("list", tags.cmd_tag_list, "list tags and their subscribers", tag_commands)

    demo = command(
        "demo",
        tags.cmd_demo,
        f"a first inbox item: create the tag {tags.DEMO_TAG!r}, subscribe a user to it and "
        "publish a welcome notification there (once per user; its other subscribers get it too)",
    )
    demo.add_argument("--username", required=True, help="the user to welcome")

    publish = command(
        "publish", service.cmd_publish, "post a notification to every subscriber of a tag"
    )
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
        service.cmd_listen,
        "print a user's live events as JSON lines (a WebSocket client of a running server)",
    )
    listen.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the server, http(s)://host:port; host:port means http, and its socket's URL "
        "(ws://host:port/ws/notifications/) works too (default http://127.0.0.1:8000)",
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
