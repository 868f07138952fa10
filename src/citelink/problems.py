"""What goes wrong when a command runs, and the one line that says so.

Commands raise `Problem` for what they find themselves (a bad setting, a port
in use, no such user). Failures from below that a person can act on (the
database unreachable or refusing the connection, the embedded server not
starting) are recognised here, in one place, and told in one line: what is
wrong and what to do. Anything else is a bug and keeps its traceback.
`--debug` (or CITELINK_DEBUG=1) shows the traceback of everything.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg

# Exit statuses besides 0 (done) and 1 (a problem reported on stderr).
STATUS_INTERRUPTED = 130  # Ctrl-C, as a shell reports it
STATUS_BROKEN_PIPE = 141  # the reader went away (`citelink user list | head`)

CHECK_URL = "check CITELINK_DATABASE_URL and that PostgreSQL runs there"
CHECK_EMBEDDED = "see `citelink db-status` and the server's log in CITELINK_DATA_DIR/pgdata/log"
# libpq's words for the server's refusal, inside psycopg's message.
_FATAL = re.compile(r"FATAL:\s+(.+)")


def debugging() -> bool:
    """`--debug` or CITELINK_DEBUG=1: tracebacks, of a failed command and in the log."""
    return os.environ.get("CITELINK_DEBUG", "") not in ("", "0")


class Problem(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


def database_location(url: str | None) -> str:
    """A database URL as it may be shown: without its password."""
    if not url:
        return "the embedded PostgreSQL"
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, ""))


def database_failure(exc: BaseException) -> str | None:
    """Why the database could not be used, in a few words; None if it is not that."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host name"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return "wrong password"
    if isinstance(
        exc,
        asyncpg.InvalidAuthorizationSpecificationError
        | asyncpg.InvalidCatalogNameError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    ):
        return str(exc)
    if isinstance(exc, psycopg.OperationalError):
        text = str(exc)
        if fatal := _FATAL.search(text):
            return fatal.group(1).strip()
        if "Connection refused" in text:
            return "connection refused"
        if "resolve host" in text or "translate host name" in text:
            return "unknown host name"
        if "timeout expired" in text:
            return "no answer in time"
        return text.splitlines()[0] if text else None
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return None


def explain(exc: BaseException) -> str | None:
    """The one line for a failure a person can act on, or None for a bug."""
    if isinstance(exc, Problem):
        return str(exc)
    if isinstance(exc, subprocess.CalledProcessError | subprocess.TimeoutExpired):
        # Only the embedded server's pg_ctl and initdb are run as subprocesses.
        data_dir = os.environ.get("CITELINK_DATA_DIR") or ".citelink"
        return (
            f"the embedded PostgreSQL did not start or stop: see its log, "
            f"{data_dir}/pgdata/log (or run `citelink db-stop` and try again)"
        )
    where = database_location(os.environ.get("CITELINK_DATABASE_URL"))
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        return f"the database {where} has no citelink schema yet: run `citelink migrate`"
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        detail = f" ({exc.detail.rstrip('.')})" if exc.detail else ""
        return f"the database refused it: {exc.message}{detail}"
    reason = database_failure(exc)
    if reason is None:
        return None
    check = CHECK_URL if os.environ.get("CITELINK_DATABASE_URL") else CHECK_EMBEDDED
    return f"cannot use the database {where}: {reason}; {check}"


def report(exc: BaseException, *, debug: bool) -> int:
    """Tell `exc` in one line on stderr and return the exit status; re-raise
    what is not the user's to fix (and everything with `debug`)."""
    if isinstance(exc, BrokenPipeError):
        # Python's recipe: point stdout at /dev/null so that the flush at exit
        # does not fail again, and go quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return STATUS_BROKEN_PIPE
    if isinstance(exc, KeyboardInterrupt):
        if debug:
            raise exc
        print(file=sys.stderr)
        return STATUS_INTERRUPTED
    line = explain(exc)
    if line is None or debug:
        raise exc
    print(f"citelink: {line}", file=sys.stderr)
    return 1
