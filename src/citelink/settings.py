"""Settings, read once from the environment (CITELINK_*)."""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from citelink.problems import Problem

# The CHECK on notification.message (sql/schema.sql): the API's limit may be
# set lower, never higher, so that the API, the CLI and plain SQL agree.
MESSAGE_CHARS_BOUND = 100_000
LOG_FORMATS = ("text", "json")


T = TypeVar("T")


def setting(
    default: T,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    parse: Callable[[str, str], T] | None = None,
) -> T:
    """A field of Settings, read from CITELINK_<NAME> within [low, high] or
    among `choices`, or by `parse(name, raw)`."""
    meta = {"low": low, "high": high, "choices": choices, "parse": parse}
    return field(default=default, metadata=meta)


def _parse(name: str, kind: str, raw: str, meta: Mapping[str, Any]) -> object:
    """The value of variable `name` for a field of type `kind`, checked."""
    if meta.get("parse"):
        return meta["parse"](name, raw)
    if kind == "bool":
        word = raw.strip().lower()
        if word not in _BOOLEANS:
            raise Problem(f"{name} must be true or false, got {raw!r}")
        return _BOOLEANS[word]
    if kind == "Path":
        return Path(raw)
    if kind.startswith("str"):
        choices = meta.get("choices")
        text = raw.lower() if choices else raw
        if choices and text not in choices:
            raise Problem(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return text
    number = int if kind == "int" else float
    try:
        value = number(raw)
    except ValueError:
        what = "an integer" if number is int else "a number"
        raise Problem(f"{name} must be {what}, got {raw!r}") from None
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"from {low} to {high}"
        raise Problem(f"{name} must be {bound}, got {value}")
    return value


def _kind(hint: object) -> str:
    """The name of a field's type: int, float, bool, Path or str (`Path | None`
    is Path)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return options[0].__name__ if isinstance(options[0], type) else "str"


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}


def _origins(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of origins (scheme://host[:port], no path)."""
    origins = []
    for part in raw.split(","):
        origin = part.strip().rstrip("/")
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


# HS256 keys: at least as long as the hash (RFC 7518, 3.2), so that they
# cannot be guessed offline from one token.
SECRET_BYTES = 32
# The placeholders of .env.example and of the docs: published, so any token
# signed with one can be forged by anyone.
_PLACEHOLDER = re.compile(r"\s*change[-_ ]?me", re.IGNORECASE)
SECRET_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def _secret(name: str, raw: str) -> str:
    """A signing secret: no placeholder, at least SECRET_BYTES bytes (never echoed)."""
    if _PLACEHOLDER.match(raw):
        raise Problem(f"{name} is the example's placeholder; {SECRET_HINT}")
    if len(raw.encode()) < SECRET_BYTES:
        raise Problem(
            f"{name} must be at least {SECRET_BYTES} bytes long, got {len(raw.encode())}; "
            f"{SECRET_HINT}"
        )
    return raw


def _check_database_url(url: str) -> None:
    """CITELINK_DATABASE_URL's shape (never echoed: it may hold a password)."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        got = f"a {scheme}:// URL" if scheme else "no URL"
        raise Problem(
            f"CITELINK_DATABASE_URL must be postgresql://user:password@host:5432/database, "
            f"got {got}; unset it to use the embedded PostgreSQL"
        )


@dataclass(frozen=True)
class Settings:
    """Everything configurable. `database_url=None` means the embedded server."""

    database_url: str | None = None
    data_dir: Path = Path(".citelink")
    secret_key: str | None = setting(None, parse=_secret)
    access_token_minutes: int = setting(59, low=1)
    refresh_token_minutes: int = setting(24 * 60, low=1)
    max_body_bytes: int = setting(1024 * 1024, low=1024)
    max_message_chars: int = setting(100_000, low=1, high=MESSAGE_CHARS_BOUND)
    max_page_size: int = setting(100, low=1)
    # Deliveries a socket may have waiting before it is closed as too slow
    # (4408). A delivery is the frames of one event batch or one reply: a burst
    # from one commit (read-all over 10,000 items) counts once.
    ws_send_queue: int = setting(1000, low=1)
    # ... and at most this much of their frames (characters of JSON); one
    # delivery of any size still goes into an empty queue.
    ws_send_queue_bytes: int = setting(1024 * 1024, low=1024)
    ws_max_frame_bytes: int = setting(64 * 1024, low=1024)
    ws_max_sockets_per_user: int = setting(20, low=1)
    ws_frames_per_second: int = setting(50, low=1)
    # How often the LISTEN connection is probed (a NOTIFY round trip), and how
    # long a probe may take before the connection is given up for dead.
    listener_probe_seconds: float = setting(5.0, low=0.1)
    max_subscriptions_per_user: int = setting(1000, low=1)
    pool_size: int = setting(10, low=1)
    # Longest wait for a database connection (connecting, or a free one in the
    # pool) and for one statement; past either a REST call answers 503.
    db_connect_seconds: float = setting(5.0, low=0.1)
    db_query_seconds: float = setting(60.0, low=0.1)
    # The per-user budget (citelink.db.budget): database operations one user
    # may run at once, REST and sockets together (staff and API keys, who
    # publish: publisher_concurrency), at most pool_size - 1 either way; past
    # it 429 or a `rate_limited` frame. And the longest statement of a user's
    # own reads and writes, and of a bulk action; staff work and background
    # work have db_query_seconds.
    user_concurrency: int = setting(4, low=1)
    publisher_concurrency: int = setting(8, low=1)
    user_query_seconds: float = setting(5.0, low=0.1)
    bulk_query_seconds: float = setting(30.0, low=0.1)
    # A listing filtered by tags, data or time looks at this many of the
    # user's items at most, per page (its `next` goes on from there).
    filter_window: int = setting(5000, low=1)
    # `citelink serve`: port and worker processes when the flags are not given.
    port: int = setting(8000, low=0, high=65535)
    workers: int = setting(1, low=1, high=64)
    # A static bearer token for Prometheus scrapers of GET /metrics (a staff
    # user's access token always works).
    metrics_token: str | None = None
    log_format: str = setting("text", choices=LOG_FORMATS)
    # HTTP connections (citelink.server.connection_guards). A request head (request line and
    # headers) may be at most http_max_header_bytes long, in at most
    # http_max_headers header lines (431 past either), and must be complete
    # within http_header_seconds of the connection opening or of the previous
    # answer (408, or closed when nothing came). An idle keep-alive connection
    # is closed after http_keepalive_seconds; the http_keepalive_requests-th
    # request of a connection is its last.
    http_max_header_bytes: int = setting(32 * 1024, low=1024)
    http_max_headers: int = setting(100, low=1)
    http_header_seconds: float = setting(10.0, low=0.1)
    http_keepalive_seconds: float = setting(5.0, low=0.1)
    http_keepalive_requests: int = setting(1000, low=1)
    # Open connections (HTTP and WebSocket) of the process, 0 for as many as
    # the open-file limit leaves room for; and per client address.
    max_connections: int = setting(0, low=0)
    max_connections_per_client: int = setting(200, low=1)
    # Sign-in throttling (citelink.identity.throttle): failed sign-ins per username and
    # sign-ins per client address, per minute (0: no limit); and password
    # hashes running at once, 0 for one per core but one (argon2 takes 19 MiB
    # and a core each).
    login_failures_per_user: int = setting(10, low=0)
    login_attempts_per_client: int = setting(30, low=0)
    password_hash_slots: int = setting(0, low=0)
    # Audit rows older than this many days are deleted in the background
    # (citelink.db.pruning); 0 keeps them.
    audit_retention_days: int = setting(0, low=0)
    # Platform tokens (citelink.identity.platform_tokens): access tokens the platform
    # citelink is embedded in mints for its users, `sub` = their external id.
    # HS256 with this shared secret, and/or RS256/ES256 with the public keys of
    # this file (PEM or JWKS), read at start-up.
    platform_token_secret: str | None = setting(None, parse=_secret)
    platform_public_keys: Path | None = None
    # Checked when set (`aud`, `iss` of platform tokens).
    platform_audience: str | None = None
    platform_issuer: str | None = None
    # The longest a platform token may live (its exp - iat): a leaked one is
    # good for this long at most, whatever the platform minted.
    platform_token_max_minutes: int = setting(60, low=1)
    # An external id citelink has not seen (in a platform token, or named by a
    # publisher) becomes a user; off, it is refused.
    platform_provisioning: bool = True
    # Origins besides the service's own that browsers may call the REST API
    # and open sockets from (citelink.identity.cors); empty: same origin only.
    cors_origins: tuple[str, ...] = setting((), parse=_origins)

    def concurrency(self, publisher: bool) -> int:
        """Database operations one caller may run at once: never the whole pool."""
        wanted = self.publisher_concurrency if publisher else self.user_concurrency
        return max(1, min(wanted, self.pool_size - 1))

    @property
    def resolved_url(self) -> str:
        """The database URL, once citelink.db.connection.resolve() has set it."""
        assert self.database_url is not None, "call resolve() first"
        return self.database_url

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from its variable (CITELINK_ and the field's name in
        capitals); an unset or empty one keeps the default."""
        kinds = typing.get_type_hints(cls)
        # Each value has its own field's type (see _kind).
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"CITELINK_{f.name.upper()}"
            raw = os.environ.get(name)
            if raw:
                values[f.name] = _parse(name, _kind(kinds[f.name]), raw, f.metadata)
        if values.get("database_url"):
            _check_database_url(values["database_url"])
        return cls(**values)
