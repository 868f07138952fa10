"""Settings, read once from the environment (CITELINK_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .failures import Problem

# The CHECK on notification.message (sql/schema.sql): the API's limit may be
# set lower, never higher, so that the API, the CLI and plain SQL agree.
MESSAGE_CHARS_BOUND = 100_000
LOG_FORMATS = ("text", "json")


def _int(name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(f"{name} must be an integer, got {raw!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise Problem(f"{name} must be from {low} to {high}, got {value}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise Problem(f"{name} must be a number, got {raw!r}") from None


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (os.environ.get(name) or default).lower()
    if raw not in choices:
        raise Problem(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise Problem(f"{name} must be true or false, got {raw!r}")


def _origins(name: str) -> tuple[str, ...]:
    """A comma-separated list of origins (scheme://host[:port], no path)."""
    origins = []
    for raw in (os.environ.get(name) or "").split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise Problem(
                f"{name}: {origin!r} is no origin; give scheme://host[:port], "
                "such as https://app.example.com"
            )
        origins.append(origin.lower())
    return tuple(origins)


def _database_url() -> str | None:
    """CITELINK_DATABASE_URL, checked for shape (never echoed: it may hold a password)."""
    url = os.environ.get("CITELINK_DATABASE_URL") or None
    if url is None:
        return None
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        got = f"a {scheme}:// URL" if scheme else "no URL"
        raise Problem(
            f"CITELINK_DATABASE_URL must be postgresql://user:password@host:5432/database, "
            f"got {got}; unset it to use the embedded PostgreSQL"
        )
    return url


@dataclass(frozen=True)
class Settings:
    """Everything configurable. `database_url=None` means the embedded server."""

    database_url: str | None = None
    data_dir: Path = Path(".citelink")
    secret_key: str | None = None
    access_token_minutes: int = 59
    refresh_token_minutes: int = 24 * 60
    max_body_bytes: int = 1024 * 1024
    max_message_chars: int = 100_000
    max_page_size: int = 100
    # Deliveries a socket may have waiting before it is closed as too slow
    # (4408). A delivery is the frames of one event batch or one reply: a burst
    # from one commit (read-all over 10,000 items) counts once.
    ws_send_queue: int = 1000
    # ... and at most this much of their frames (characters of JSON); one
    # delivery of any size still goes into an empty queue.
    ws_send_queue_bytes: int = 1024 * 1024
    ws_max_frame_bytes: int = 64 * 1024
    ws_max_sockets_per_user: int = 20
    ws_frames_per_second: int = 50
    # How often the LISTEN connection is probed (a NOTIFY round trip), and how
    # long a probe may take before the connection is given up for dead.
    listener_probe_seconds: float = 5.0
    max_subscriptions_per_user: int = 1000
    pool_size: int = 10
    # Longest wait for a database connection (connecting, or a free one in the
    # pool) and for one statement; past either a REST call answers 503.
    db_connect_seconds: float = 5.0
    db_query_seconds: float = 60.0
    # `citelink serve`: port and worker processes when the flags are not given.
    port: int = 8000
    workers: int = 1
    # A static bearer token for Prometheus scrapers of GET /metrics (a staff
    # user's access token always works).
    metrics_token: str | None = None
    log_format: str = "text"
    # HTTP connections (citelink.connections). A request head (request line and
    # headers) may be at most http_max_header_bytes long, in at most
    # http_max_headers header lines (431 past either), and must be complete
    # within http_header_seconds of the connection opening or of the previous
    # answer (408, or closed when nothing came). An idle keep-alive connection
    # is closed after http_keepalive_seconds; the http_keepalive_requests-th
    # request of a connection is its last.
    http_max_header_bytes: int = 32 * 1024
    http_max_headers: int = 100
    http_header_seconds: float = 10.0
    http_keepalive_seconds: float = 5.0
    http_keepalive_requests: int = 1000
    # Open connections (HTTP and WebSocket) of the process, 0 for as many as
    # the open-file limit leaves room for; and per client address.
    max_connections: int = 0
    max_connections_per_client: int = 200
    # Sign-in throttling (citelink.throttle): failed sign-ins per username and
    # sign-ins per client address, per minute (0: no limit); and password
    # hashes running at once, 0 for one per core but one (argon2 takes 19 MiB
    # and a core each).
    login_failures_per_user: int = 10
    login_attempts_per_client: int = 30
    password_hash_slots: int = 0
    # Audit rows older than this many days are deleted in the background
    # (citelink.pruning); 0 keeps them.
    audit_retention_days: int = 0
    # Platform tokens (citelink.platform_tokens): access tokens the platform
    # citelink is embedded in mints for its users, `sub` = their external id.
    # HS256 with this shared secret, and/or RS256/ES256 with the public keys of
    # this file (PEM or JWKS), read at start-up.
    platform_token_secret: str | None = None
    platform_public_keys: Path | None = None
    # Checked when set (`aud`, `iss` of platform tokens).
    platform_audience: str | None = None
    platform_issuer: str | None = None
    # An external id citelink has not seen (in a platform token, or named by a
    # publisher) becomes a user; off, it is refused.
    platform_provisioning: bool = True
    # Origins besides the service's own that browsers may call the REST API
    # and open sockets from (citelink.cors); empty: same origin only.
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        return cls(
            database_url=_database_url(),
            data_dir=Path(env("CITELINK_DATA_DIR") or ".citelink"),
            secret_key=env("CITELINK_SECRET_KEY") or None,
            access_token_minutes=_int("CITELINK_ACCESS_TOKEN_MINUTES", cls.access_token_minutes),
            refresh_token_minutes=_int("CITELINK_REFRESH_TOKEN_MINUTES", cls.refresh_token_minutes),
            max_body_bytes=_int("CITELINK_MAX_BODY_BYTES", cls.max_body_bytes),
            max_message_chars=_int(
                "CITELINK_MAX_MESSAGE_CHARS", cls.max_message_chars, 1, MESSAGE_CHARS_BOUND
            ),
            max_page_size=_int("CITELINK_MAX_PAGE_SIZE", cls.max_page_size),
            ws_send_queue=_int("CITELINK_WS_SEND_QUEUE", cls.ws_send_queue),
            ws_send_queue_bytes=_int("CITELINK_WS_SEND_QUEUE_BYTES", cls.ws_send_queue_bytes),
            ws_max_frame_bytes=_int("CITELINK_WS_MAX_FRAME_BYTES", cls.ws_max_frame_bytes),
            ws_max_sockets_per_user=_int(
                "CITELINK_WS_MAX_SOCKETS_PER_USER", cls.ws_max_sockets_per_user
            ),
            ws_frames_per_second=_int("CITELINK_WS_FRAMES_PER_SECOND", cls.ws_frames_per_second),
            listener_probe_seconds=_float(
                "CITELINK_LISTENER_PROBE_SECONDS", cls.listener_probe_seconds
            ),
            max_subscriptions_per_user=_int(
                "CITELINK_MAX_SUBSCRIPTIONS_PER_USER", cls.max_subscriptions_per_user
            ),
            pool_size=_int("CITELINK_POOL_SIZE", cls.pool_size),
            db_connect_seconds=_float("CITELINK_DB_CONNECT_SECONDS", cls.db_connect_seconds),
            db_query_seconds=_float("CITELINK_DB_QUERY_SECONDS", cls.db_query_seconds),
            port=_int("CITELINK_PORT", cls.port, 0, 65535),
            workers=_int("CITELINK_WORKERS", cls.workers, 1, 64),
            metrics_token=env("CITELINK_METRICS_TOKEN") or None,
            log_format=_choice("CITELINK_LOG_FORMAT", cls.log_format, LOG_FORMATS),
            http_max_header_bytes=_int("CITELINK_HTTP_MAX_HEADER_BYTES", cls.http_max_header_bytes),
            http_max_headers=_int("CITELINK_HTTP_MAX_HEADERS", cls.http_max_headers),
            http_header_seconds=_float("CITELINK_HTTP_HEADER_SECONDS", cls.http_header_seconds),
            http_keepalive_seconds=_float(
                "CITELINK_HTTP_KEEPALIVE_SECONDS", cls.http_keepalive_seconds
            ),
            http_keepalive_requests=_int(
                "CITELINK_HTTP_KEEPALIVE_REQUESTS", cls.http_keepalive_requests
            ),
            max_connections=_int("CITELINK_MAX_CONNECTIONS", cls.max_connections),
            max_connections_per_client=_int(
                "CITELINK_MAX_CONNECTIONS_PER_CLIENT", cls.max_connections_per_client
            ),
            login_failures_per_user=_int(
                "CITELINK_LOGIN_FAILURES_PER_USER", cls.login_failures_per_user
            ),
            login_attempts_per_client=_int(
                "CITELINK_LOGIN_ATTEMPTS_PER_CLIENT", cls.login_attempts_per_client
            ),
            password_hash_slots=_int("CITELINK_PASSWORD_HASH_SLOTS", cls.password_hash_slots),
            audit_retention_days=_int("CITELINK_AUDIT_RETENTION_DAYS", cls.audit_retention_days),
            platform_token_secret=env("CITELINK_PLATFORM_TOKEN_SECRET") or None,
            platform_public_keys=Path(keys)
            if (keys := env("CITELINK_PLATFORM_PUBLIC_KEYS"))
            else None,
            platform_audience=env("CITELINK_PLATFORM_AUDIENCE") or None,
            platform_issuer=env("CITELINK_PLATFORM_ISSUER") or None,
            platform_provisioning=_bool(
                "CITELINK_PLATFORM_PROVISIONING", cls.platform_provisioning
            ),
            cors_origins=_origins("CITELINK_CORS_ORIGINS"),
        )
