"""Test data by plain SQL: users with tokens, tags, subscriptions, notifications;
and matchers for frames and bodies."""

from __future__ import annotations

import functools

import asyncpg

from citelink.identity import passwords, tokens

SECRET_KEY = "test-secret-key-of-sufficient-length-for-hs256"


class Partial(dict):
    """Equal to any dict that has these items, whatever else it has (frames
    and bodies that grew fields since a test was written)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and all(
            k in other and other[k] == v for k, v in self.items()
        )

    __hash__ = None  # type: ignore[assignment]


def unread_counts(unread: int) -> Partial:
    """A `counts` frame with this unread count."""
    return Partial(type="counts", unread=unread)


class User:
    """A test user with a valid access token."""

    def __init__(self, id: int, username: str, password: str, is_staff: bool, token: str):
        self.id, self.username, self.password = id, username, password
        self.is_staff, self.token = is_staff, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# argon2 is slow on purpose: hash each test password once per session.
_hash = functools.cache(passwords.hash_password)


async def create_user(
    conn: asyncpg.Connection, username: str, *, staff: bool = False, password: str = "secret-pw"
) -> User:
    """A user made by plain SQL, with an access token."""
    user_id = await conn.fetchval(
        "INSERT INTO users (username, password_hash, is_staff) VALUES ($1, $2, $3) RETURNING id",
        username,
        _hash(password),
        staff,
    )
    token = tokens.issue(SECRET_KEY, user_id, "access", 60, staff=staff)
    return User(user_id, username, password, staff, token)


async def add_users(conn: asyncpg.Connection, *names: str) -> list[int]:
    """Users made by plain SQL, without a usable password (fast); their ids."""
    rows = await conn.fetch(
        "INSERT INTO users (username, password_hash) SELECT n, 'x' FROM unnest($1::text[]) n "
        "RETURNING id",
        list(names),
    )
    return [r["id"] for r in rows]


async def publish(conn: asyncpg.Connection, tag_id: int, message: str = "hello") -> int:
    """Publish by plain SQL, as psql or a cron job would; the notification id."""
    return await conn.fetchval(
        "INSERT INTO notification (tag_id, message) VALUES ($1, $2) RETURNING id", tag_id, message
    )


async def publish_many(conn: asyncpg.Connection, tag_id: int, count: int, padding: int = 0) -> None:
    """`count` notifications in one statement: "n1", "n2", ... each followed by
    `padding` characters."""
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'n' || g || CASE WHEN $3::int > 0 THEN ' ' || repeat('x', $3) ELSE '' END "
        "FROM generate_series(1, $2) AS g",
        tag_id,
        count,
        padding,
    )


async def recipients_of(conn: asyncpg.Connection, note: int) -> int:
    """The recipient count of notification `note` (0 when it reached no one)."""
    return await conn.fetchval(
        "SELECT coalesce(sum(recipients), 0) FROM notification_recipients "
        "WHERE notification_id = $1",
        note,
    )


async def subscribe(conn: asyncpg.Connection, user_id: int, tag: str) -> int:
    """Subscribe by plain SQL, creating the tag if needed; returns the tag id."""
    tag_id = await conn.fetchval(
        "INSERT INTO tag (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = excluded.name "
        "RETURNING id",
        tag,
    )
    await conn.execute(
        "INSERT INTO subscription (user_id, tag_id) VALUES ($1, $2)", user_id, tag_id
    )
    return tag_id


async def assert_gapless(conn: asyncpg.Connection) -> None:
    """Every user's positions are 1..n, n being their counter's last position,
    but for the places grouped items left when they moved to the top (each
    item that collected `count` notifications moved count - 1 times)."""
    rows = await conn.fetch(
        "SELECT c.user_id, c.last_position, array_agg(i.position ORDER BY i.position) AS taken, "
        "coalesce(sum(i.count - 1), 0) AS moves "
        "FROM inbox_count c LEFT JOIN user_notification i ON i.user_id = c.user_id "
        "GROUP BY c.user_id, c.last_position"
    )
    for row in rows:
        taken = [p for p in row["taken"] if p is not None]
        if row["moves"] == 0:
            assert taken == list(range(1, row["last_position"] + 1)), dict(row)
        else:
            assert len(set(taken)) == len(taken) and max(taken) == row["last_position"]
            assert len(taken) + row["moves"] == row["last_position"], dict(row)


async def assert_counters_match(conn: asyncpg.Connection) -> None:
    """Every counter row equals a recount of its user's items."""
    wrong = await conn.fetch(
        "SELECT c.user_id, c.unseen, c.unread, c.total, c.archived, r.* FROM inbox_count c "
        "CROSS JOIN LATERAL (SELECT coalesce(sum((k).unseen), 0) AS r_unseen, "
        "coalesce(sum((k).unread), 0) AS r_unread, coalesce(sum((k).total), 0) AS r_total, "
        "coalesce(sum((k).archived), 0) AS r_archived "
        "FROM (SELECT citelink_item_counts(i) AS k FROM user_notification i "
        "WHERE i.user_id = c.user_id) AS s) AS r "
        "WHERE (c.unseen, c.unread, c.total, c.archived) "
        "IS DISTINCT FROM (r.r_unseen, r.r_unread, r.r_total, r.r_archived)"
    )
    assert not wrong, [dict(r) for r in wrong]


async def recipients_and_items(
    conn: asyncpg.Connection, message_like: str
) -> list[tuple[int, int]]:
    """(recipient count, inbox rows) of each notification whose message is LIKE `message_like`."""
    rows = await conn.fetch(
        "SELECT r.recipients, (SELECT count(*) FROM user_notification AS i "
        "WHERE i.notification_id = n.id) AS items FROM notification AS n "
        "JOIN notification_recipients AS r ON r.notification_id = n.id "
        "WHERE message LIKE $1",
        message_like,
    )
    return [tuple(r) for r in rows]
