"""API keys for services: `cl_<prefix>_<secret>`, used as `Authorization: Bearer <key>`.

The secret is 32 random bytes (secrets.token_urlsafe), shown once when the
key is made; the database keeps its SHA-256 only. A slow password hash
(argon2) defends guessable secrets against offline guessing; 256 random bits
cannot be guessed whatever the hash, so a fast one that costs nothing per
request is as safe. The prefix names the key in lists, the CLI and the audit
trail, and finds its row.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from citelink.db.connection import Queryable
from citelink.db.queries import Q

SCOPES = ("publish", "admin")
_KEY = re.compile(r"cl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewKey:
    prefix: str
    key: str  # the whole key, to be shown once
    digest: str


def looks_like_key(token: str) -> bool:
    """Keys are told from JWTs by their shape (a JWT has no `cl_` start)."""
    return token.startswith("cl_")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"cl_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(prefix, key, digest(key))


@dataclass(frozen=True)
class KeyRow:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    revoked: bool


async def find(pool: Queryable, key: str) -> KeyRow | None:
    """The key's row when `key` is a key citelink made (revoked or not); None otherwise."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    row = await pool.fetchrow(Q.api_key_by_prefix, match[1])
    # Compared in constant time: the digest must not leak through timing.
    if row is None or not hmac.compare_digest(row["hash"], digest(key)):
        return None
    return KeyRow(row["id"], row["name"], row["prefix"], tuple(row["scopes"]), row["revoked"])
