"""Every `citelink` command, run as a real process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from citelink import embedded, passwords

from .conftest import SECRET_KEY

COMMANDS = [
    ["serve"],
    ["migrate"],
    ["db-url"],
    ["createsuperuser"],
    ["user"],
    ["user", "create"],
    ["user", "list"],
    ["user", "set-password"],
    ["user", "deactivate"],
    ["user", "activate"],
    ["publish"],
    ["listen"],
]


def citelink(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "citelink.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CITELINK_DATABASE_URL": db_url,
        "CITELINK_SECRET_KEY": SECRET_KEY,
        "CITELINK_DATA_DIR": str(tmp_path / "unused"),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, env):
    result = citelink(*command, "--help", env=env)
    assert result.returncode == 0, result.stderr
    assert "usage: citelink" in result.stdout


def test_migrate_is_idempotent(env):
    result = citelink("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout


def test_db_url_prints_the_database_in_use(env, db_url):
    result = citelink("db-url", env=env)
    assert result.stdout.strip() == db_url


def test_users_are_created_listed_and_managed(env, db_url):
    created = citelink("createsuperuser", "--username", "Admin", "--password", "pw-1", env=env)
    assert created.returncode == 0, created.stderr
    assert "created staff user 'Admin'" in created.stdout
    plain = citelink("user", "create", "--username", "bob", "--password", "pw-2", env=env)
    assert "created user 'bob'" in plain.stdout

    duplicate = citelink("user", "create", "--username", "ADMIN", "--password", "x", env=env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    bad_name = citelink("user", "create", "--username", "a b", "--password", "x", env=env)
    assert bad_name.returncode == 1 and "username" in bad_name.stderr

    listing = citelink("user", "list", env=env).stdout.splitlines()
    assert [line.split()[1:] for line in listing] == [["Admin", "staff"], ["bob"]]

    assert citelink("user", "set-password", "--username", "bob", "--password", "new", env=env)
    assert citelink("user", "deactivate", "--username", "bob", env=env).returncode == 0
    with psycopg.connect(db_url) as conn:
        hashed, active = conn.execute(
            "SELECT password_hash, is_active FROM users WHERE username = 'bob'"
        ).fetchone()
    assert passwords.verify_password(hashed, "new") and not active
    assert "inactive" in citelink("user", "list", env=env).stdout
    assert citelink("user", "activate", "--username", "bob", env=env).returncode == 0
    assert "inactive" not in citelink("user", "list", env=env).stdout

    missing = citelink("user", "deactivate", "--username", "nobody", env=env)
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr


def test_missing_password_without_a_terminal_is_a_clear_error(env):
    result = citelink("createsuperuser", "--username", "admin", env=env)
    assert result.returncode != 0
    assert "missing password" in result.stderr


def test_publish_fans_out_like_any_insert(env, db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO users (username, password_hash) VALUES ('ann', 'x')")
        conn.execute("INSERT INTO tag (name) VALUES ('news')")
        conn.execute(
            "INSERT INTO subscription (user_id, tag_id) SELECT u.id, t.id FROM users u, tag t"
        )

    result = citelink("publish", "--tag", "news", "--data", '{"k": 1}', "hello there", env=env)

    assert result.returncode == 0, result.stderr
    assert "to 1 recipient(s)" in result.stdout
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT n.message, n.data FROM user_notification i JOIN notification n "
            "ON n.id = i.notification_id"
        ).fetchone()
    assert row == ("hello there", {"k": 1})
    assert citelink("publish", "--tag", "nope", "x", env=env).returncode == 1
    assert citelink("publish", "--tag", "news", "--data", "[1]", "x", env=env).returncode != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_health_and_stops_on_sigterm(env):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "citelink.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The banner is printed once migrations are done, just before binding.
        assert "serving on" in proc.stdout.readline()
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.05)
        assert response.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert proc.returncode == -signal.SIGTERM
    assert "Application shutdown complete" in output


def test_external_database_requires_a_secret_key(env):
    del env["CITELINK_SECRET_KEY"]
    result = citelink("db-url", env=env)
    assert result.returncode != 0
    assert "CITELINK_SECRET_KEY is required" in result.stderr


def test_embedded_default_starts_migrates_and_keeps_a_secret_key():
    # Not under pytest's tmp_path: pytest resets its base folder to mode 0700 at
    # every session start, which would lock the server's own user out.
    data_dir = Path(tempfile.mkdtemp(prefix="citelink-embedded-")) / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITELINK_")}
    env["CITELINK_DATA_DIR"] = str(data_dir)
    try:
        created = citelink("createsuperuser", "--username", "a", "--password", "b", env=env)
        assert created.returncode == 0, created.stderr
        url = citelink("db-url", env=env).stdout.strip()
        assert url.startswith("postgresql://") and str(data_dir.resolve()) in url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT username FROM users").fetchall() == [("a",)]
        key = data_dir / "secret_key"
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text()) > 32
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(data_dir.parent)
