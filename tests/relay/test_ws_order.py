"""Per-user order at the socket: an open transaction holds up only its own
recipients, and a big fan-out (one `fanout` event) reaches every connected
recipient with the same frames as a small one."""

from __future__ import annotations

import asyncio

from citelink.db.connection import connect
from tests.support.data import Partial, publish, subscribe
from tests.support.wsclient import messages, open_socket


async def test_an_open_transaction_holds_up_no_other_users_pushes(
    server, client, conn, db_url, make_user
):
    """`BEGIN; INSERT INTO notification ...` left open on tag A: a publish on
    tag B, over REST, answers at once and reaches B's subscriber's socket
    while A's transaction is still open; A's item follows when it commits."""
    staff = await make_user("admin", staff=True)
    alice, bob = await make_user("alice"), await make_user("bob")
    tag_a = await subscribe(conn, alice.id, "a")
    tag_b = await subscribe(conn, bob.id, "b")
    idle = await connect(db_url)
    try:
        async with (
            open_socket(server, alice.token) as alice_ws,
            open_socket(server, bob.token) as bob_ws,
        ):
            async with idle.transaction():
                await publish(idle, tag_a, "held")
                async with asyncio.timeout(5):
                    r = await client.post(
                        "/api/notifications/",
                        json={"message": "not held", "tag": tag_b},
                        headers=staff.headers,
                    )
                    assert r.status_code == 201 and r.json()["recipients"] == 1
                    frames = await bob_ws.until_message("not held")
                    assert frames[-1]["position"] == 1
                    counts = await client.get("/api/inbox/counts/", headers=bob.headers)
                    assert counts.json() == Partial(unread=1, total=1)
                assert await alice_ws.request("ping") == {"type": "pong"}
            assert messages(await alice_ws.until_message("held")) == ["held"]
    finally:
        await idle.close()


async def test_a_big_fan_out_reaches_every_connected_recipient(server, conn, make_user):
    """2,000 subscribers, a few connected: the statement sends one `fanout`
    event, and each socket gets its own item (id, position, counts) as from a
    small fan-out."""
    alice, bob = await make_user("alice"), await make_user("bob")
    tag = await subscribe(conn, alice.id, "everyone")
    await subscribe(conn, bob.id, "everyone")
    await conn.execute(
        "INSERT INTO users (username, password_hash) SELECT 'u' || g, 'x' "
        "FROM generate_series(1, 2000) g"
    )
    await conn.execute(
        "INSERT INTO subscription (user_id, tag_id) "
        "SELECT id, $1 FROM users WHERE username LIKE 'u%' ",
        tag,
    )
    small = await subscribe(conn, alice.id, "small")
    async with open_socket(server, alice.token) as a, open_socket(server, bob.token) as b:
        await publish(conn, small, "small first")
        assert messages(await a.recv_until("counts")) == ["small first"]
        note = await publish(conn, tag, "to everyone")
        for ws, user, position in ((a, alice, 2), (b, bob, 1)):
            frames = await ws.recv_until("counts")
            (item,) = [f for f in frames if f["type"] == "notification"]
            row = await conn.fetchrow(
                "SELECT id, position FROM user_notification "
                "WHERE user_id = $1 AND notification_id = $2",
                user.id,
                note,
            )
            assert (item["id"], item["position"], item["notification_id"]) == (
                row["id"],
                position,
                note,
            )
            assert item["message"] == "to everyone" and frames[-1]["unread"] == position
