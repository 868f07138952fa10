"""A small world for the REST API tests, built by plain SQL.

staff "admin" (password "admin", as in the seed), users alice and bob, both
subscribed to tag "news"; alice alone to "private". One notification on each
tag, so alice has two inbox items and bob one. Tags "spare" and "extra"
have no subscribers and no notifications (free to subscribe to or delete).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

import asyncpg
import jwt
import orjson

from citelink.identity import tokens
from tests.support.data import SECRET_KEY, User, create_user, subscribe

# Only alice may ever see this text (apart from staff, who published it).
SECRET = "for-alice-only"


@dataclass
class World:
    staff: User
    alice: User
    bob: User
    news: int
    private: int
    spare: int
    extra: int
    alice_sub: int
    bob_sub: int
    news_note: int
    secret_note: int
    alice_item: int  # alice's copy of the secret notification
    bob_item: int


async def build_world(conn: asyncpg.Connection) -> World:
    staff = await create_user(conn, "admin", staff=True, password="admin")
    alice = await create_user(conn, "alice")
    bob = await create_user(conn, "bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    private = await subscribe(conn, alice.id, "private")
    spare = await conn.fetchval("INSERT INTO tag (name) VALUES ('spare') RETURNING id")
    extra = await conn.fetchval("INSERT INTO tag (name) VALUES ('extra') RETURNING id")
    sub = "SELECT id FROM subscription WHERE user_id = $1 AND tag_id = $2"
    publish = "INSERT INTO notification (tag_id, message) VALUES ($1, $2) RETURNING id"
    news_note = await conn.fetchval(publish, news, "hello everyone")
    secret_note = await conn.fetchval(publish, private, SECRET)
    item = "SELECT id FROM user_notification WHERE user_id = $1 AND notification_id = $2"
    return World(
        staff=staff,
        alice=alice,
        bob=bob,
        news=news,
        private=private,
        spare=spare,
        extra=extra,
        alice_sub=await conn.fetchval(sub, alice.id, news),
        bob_sub=await conn.fetchval(sub, bob.id, news),
        news_note=news_note,
        secret_note=secret_note,
        alice_item=await conn.fetchval(item, alice.id, secret_note),
        bob_item=await conn.fetchval(item, bob.id, news_note),
    )


def _b64(value: dict | bytes) -> str:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user_id: int | str, token_type: str = "access", **changes) -> dict:
    now = int(time.time())
    claims = {"token_type": token_type, "user_id": user_id, "iat": now, "exp": now + 600}
    claims["jti"] = "0" * 32
    return {k: v for k, v in {**claims, **changes}.items() if v is not None}


def _hmac_signed(header: dict, claims: dict, key: str) -> str:
    """A token signed with HMAC-SHA256 whatever its header claims (the key
    confusion attack: RS256 in the header, the HMAC of the secret as signature)."""
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bad_tokens(user_id: int) -> dict[str, str]:
    """Tokens that must never authenticate user `user_id`, REST or WebSocket.
    (The HS512 one is signed with a key short for HS512: filter the warning.)"""
    now = int(time.time())

    def signed(**changes) -> str:
        claims = {k: v for k, v in {**_claims(user_id), **changes}.items() if v is not None}
        return jwt.encode(claims, SECRET_KEY, algorithm="HS256")

    return {
        "expired": tokens.issue(SECRET_KEY, user_id, "access", -1),
        "wrong signature": tokens.issue(
            "another-secret-key-of-sufficient-length", user_id, "access", 5
        ),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user_id))}.",
        "alg None, signed": _hmac_signed({"alg": "None"}, _claims(user_id), SECRET_KEY),
        "alg RS256, HMAC signature": _hmac_signed(
            {"alg": "RS256", "typ": "JWT"}, _claims(user_id), SECRET_KEY
        ),
        "alg ES256, HMAC signature": _hmac_signed(
            {"alg": "ES256", "typ": "JWT"}, _claims(user_id), SECRET_KEY
        ),
        "alg HS512": jwt.encode(_claims(user_id), SECRET_KEY, algorithm="HS512"),
        "refresh, not access": tokens.issue(SECRET_KEY, user_id, "refresh", 5),
        "unknown token_type": signed(token_type="id"),
        "not yet valid (nbf)": signed(nbf=now + 600),
        "issued in the future (iat)": signed(iat=now + 600),
        "no exp": signed(exp=None),
        "no iat": signed(iat=None),
        "no jti": signed(jti=None),
        "no token_type": signed(token_type=None),
        "no user_id": signed(user_id=None),
        "user_id a string": signed(user_id=str(user_id)),
        "user_id true": signed(user_id=True),
        "user_id zero": signed(user_id=0),
        "user_id past bigint": signed(user_id=2**64),
        "no such user": tokens.issue(SECRET_KEY, 999_999, "access", 5),
        "garbage": "not-a-token",
        "three dots": "a.b.c",
        "non-ASCII": "ééé.ééé.ééé",
    }


# The inbox item shape, REST and WebSocket alike (SPEC §4).
ITEM_KEYS = {
    "id",
    "notification_id",
    "tag",
    "tag_name",
    "message",
    "data",
    "timestamp",
    "is_read",
    "read_at",
    "position",
    "is_seen",
    "seen_at",
    "is_archived",
    "archived_at",
    "interacted_at",
    "action",
    "priority",
    "group_key",
    "count",
    "notification_ids",
    "expires_at",
}
