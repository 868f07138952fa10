"""A small world for the REST API tests, built by plain SQL.

staff "admin" (password "admin", as in the seed), users alice and bob, both
subscribed to tag "news"; alice alone to "private". One notification on each
tag, so alice has two inbox items and bob one. Tags "spare" and "extra"
have no subscribers and no notifications (free to subscribe to or delete).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import asyncpg

from citelink import passwords, tokens

from .conftest import SECRET_KEY, User, subscribe

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


# argon2 is slow on purpose: hash each test password once per session.
_hash = functools.cache(passwords.hash_password)


async def make_user(
    conn: asyncpg.Connection, username: str, *, staff: bool = False, password: str = "secret-pw"
) -> User:
    """Like conftest's make_user, with the password hash cached."""
    user_id = await conn.fetchval(
        "INSERT INTO users (username, password_hash, is_staff) VALUES ($1, $2, $3) RETURNING id",
        username,
        _hash(password),
        staff,
    )
    token = tokens.issue(SECRET_KEY, user_id, "access", 60)
    return User(user_id, username, password, staff, token)


async def build_world(conn: asyncpg.Connection) -> World:
    staff = await make_user(conn, "admin", staff=True, password="admin")
    alice = await make_user(conn, "alice")
    bob = await make_user(conn, "bob")
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
