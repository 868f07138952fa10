"""Seen, archived, interacted: each state set by REST, by the socket or by
plain SQL behaves the same, reaches every socket of the user on every process,
is audited and counted; filters and bulk actions select the same items in
lists, counts and changes."""

from __future__ import annotations

import random

import pytest

from tests.support.attack import LINK_ATTACKS
from tests.support.data import publish, subscribe
from tests.support.world import World
from tests.support.wsclient import open_socket, serving

# state -> (REST call, socket frame, plain SQL, the frame sockets are told)
WAYS = {
    "seen": (
        ("PATCH", "", {"is_seen": True}),
        {"type": "seen"},
        "is_seen = true",
        "seen",
    ),
    "archive": (
        ("PATCH", "", {"is_archived": True}),
        {"type": "archive"},
        "is_archived = true",
        "archive",
    ),
    "interact": (
        ("POST", "interact/", {"action": "open"}),
        {"type": "interact", "action": "open"},
        "interacted_at = now(), action = 'open'",
        "interact",
    ),
}


async def recount(conn) -> bool:
    """The counter rows equal a recount of the inbox."""
    return await conn.fetchval(
        "SELECT coalesce(bool_and((c.unseen, c.unread, c.total, c.archived) = "
        "(r.unseen, r.unread, r.total, r.archived)), true) FROM inbox_count AS c "
        "JOIN LATERAL (SELECT "
        "count(*) FILTER (WHERE NOT is_deleted AND NOT is_archived AND NOT is_seen) AS unseen, "
        "count(*) FILTER (WHERE NOT is_deleted AND NOT is_archived AND NOT is_read) AS unread, "
        "count(*) FILTER (WHERE NOT is_deleted AND NOT is_archived) AS total, "
        "count(*) FILTER (WHERE NOT is_deleted AND is_archived) AS archived "
        "FROM user_notification WHERE user_id = c.user_id) AS r ON true"
    )


@pytest.mark.parametrize("state", list(WAYS))
@pytest.mark.parametrize("way", ["rest", "socket", "sql"])
async def test_a_state_reaches_every_socket_on_every_process(
    settings, client, conn, make_user, state, way
):
    (method, path, body), frame, sql, told = WAYS[state]
    staff, alice = await make_user("admin", staff=True), await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await conn.execute(
        "INSERT INTO notification (tag_id, message, data) VALUES ($1, 'hi', $2)",
        news,
        {"url": "https://example.com/", "actions": [{"id": "open", "label": "Open"}]},
    )
    item = await conn.fetchval("SELECT id FROM user_notification")
    async with (
        serving(settings) as one,
        serving(settings) as two,
        open_socket(one, alice.token) as acting,
        open_socket(one, alice.token) as other_tab,
        open_socket(two, alice.token) as other_process,
    ):
        if way == "rest":
            r = await client.request(
                method, f"/api/inbox/{item}/{path}", json=body, headers=alice.headers
            )
            assert r.status_code == 200, r.text
        elif way == "socket":
            await acting.send(**frame, id=item)
        else:
            await conn.execute(f"UPDATE user_notification SET {sql} WHERE id = $1", item)
        for ws in (acting, other_tab, other_process):
            frames = await ws.recv_until("counts")
            assert {"type": told, "id": item} == {
                k: v for k, v in frames[-2].items() if k != "action"
            }
            if state == "interact":
                assert frames[-2]["action"] == "open"
                assert [f["type"] for f in frames] == ["interact", "counts"]
    audit = await conn.fetchrow(
        "SELECT actor_id, changes FROM audit_log WHERE resource = 'user_notification' "
        "AND action = 'update' AND object_id = $1",
        item,
    )
    assert audit["actor_id"] == (None if way == "sql" else alice.id)
    changed = {"seen": "is_seen", "archive": "is_archived", "interact": "interacted_at"}[state]
    assert audit["changes"][changed][0] in (False, None)
    assert await recount(conn)
    del staff


async def test_the_counters_equal_a_recount_after_a_random_mix_of_changes(conn, world: World):
    """1,000 changes of every kind, by single statements and in bulk."""
    rng = random.Random(14)
    await conn.execute(
        "INSERT INTO notification (tag_id, message) SELECT $1, 'n' || g "
        "FROM generate_series(1, 60) g",
        world.news,
    )
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM user_notification")]
    sets = [
        "is_seen = true",
        "is_seen = false",
        "is_read = true",
        "is_read = false",
        "is_archived = true",
        "is_archived = false",
        "interacted_at = now()",
        "is_deleted = true",
        "is_deleted = false",
    ]
    for _ in range(1000):
        chosen = rng.sample(ids, rng.choice([1, 1, 1, 5, 20]))
        await conn.execute(
            f"UPDATE user_notification SET {rng.choice(sets)} WHERE id = ANY($1)", chosen
        )
    assert await recount(conn)
    states = await conn.fetch(
        "SELECT count(*) FILTER (WHERE is_read AND NOT is_seen) FROM user_notification"
    )
    assert states[0][0] == 0  # a read item is always a seen one


async def test_filters_select_the_same_items_in_pages_counts_and_bulk(client, conn, world: World):
    alice = world.alice
    extra = await subscribe(conn, alice.id, "extra")
    for n in range(6):
        await conn.execute(
            "INSERT INTO notification (tag_id, message, data) VALUES ($1, $2, $3)",
            (world.news, extra)[n % 2],
            f"m{n}",
            {"kind": "even" if n % 2 == 0 else "odd", "n": n},
        )
    auth = alice.headers

    async def listed(query: str) -> list[str]:
        """Every message the query lists, paged 2 at a time with `next`."""
        messages, before = [], None
        while True:
            cursor = f"&before={before}" if before else ""
            r = await client.get(f"/api/inbox/?limit=2{cursor}&{query}", headers=auth)
            assert r.status_code == 200, r.text
            messages += [i["message"] for i in r.json()["results"]]
            before = r.json()["next"]
            if before is None:
                return messages

    assert await listed(f"tag={extra}") == ["m5", "m3", "m1"]
    both = await listed(f"tag={extra}&tag={world.news}&data=" + '{"kind":"even"}')
    assert both == ["m4", "m2", "m0"]
    r = await client.get(f"/api/inbox/counts/?tag={extra}", headers=auth)
    assert r.json() == {"unseen": 3, "unread": 3, "total": 3, "archived": 0}

    r = await client.post(
        "/api/inbox/bulk/",
        json={"action": "archive", "filter": {"tag": [extra], "data": {"n": 3}}},
        headers=auth,
    )
    assert r.json() == {"updated": 1}
    assert await listed("status=archived") == ["m3"]
    assert "m3" not in await listed("status=all")
    r = await client.post(f"/api/inbox/seen-all/?tag={extra}", headers=auth)
    assert r.json() == {"updated": 2}  # m5 and m1: m3 is archived
    assert await listed(f"status=unseen&tag={extra}") == []
    r = await client.get("/api/inbox/counts/", headers=auth)
    counts = r.json()
    assert counts["archived"] == 1 and counts["total"] == 7 and counts["unseen"] == 5
    assert await recount(conn)


async def test_unarchive_without_a_status_brings_back_the_archived_items(
    client, conn, world: World
):
    """The default list holds no archived item: an unarchive with an empty
    filter means the archived ones (it changed nothing before); with a
    filter, the archived ones it selects."""
    auth = world.alice.headers
    r = await client.post("/api/inbox/bulk/", json={"action": "archive"}, headers=auth)
    assert r.json() == {"updated": 2}
    r = await client.post(
        "/api/inbox/bulk/",
        json={"action": "unarchive", "filter": {"tag": [world.private]}},
        headers=auth,
    )
    assert r.json() == {"updated": 1}
    r = await client.post(
        "/api/inbox/bulk/", json={"action": "unarchive", "filter": {}}, headers=auth
    )
    assert r.json() == {"updated": 1}
    r = await client.get("/api/inbox/counts/", headers=auth)
    assert (r.json()["archived"], r.json()["total"]) == (0, 2)
    assert await recount(conn)


async def test_another_users_item_is_a_404_on_every_new_route(client, world: World):
    theirs = world.bob_item
    auth = world.alice.headers
    for method, path, body in (
        ("PATCH", f"/api/inbox/{theirs}/", {"is_seen": True}),
        ("PATCH", f"/api/inbox/{theirs}/", {"is_archived": True}),
        ("POST", f"/api/inbox/{theirs}/interact/", {}),
    ):
        r = await client.request(method, path, json=body, headers=auth)
        assert (r.status_code, r.json()) == (404, {"detail": "no such inbox item"})
    # A bulk action never reaches another user's items.
    r = await client.post("/api/inbox/bulk/", json={"action": "delete"}, headers=auth)
    assert r.json() == {"updated": 2}
    r = await client.get(f"/api/inbox/{theirs}/", headers=world.bob.headers)
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/api/inbox/{item}/", {}, "is_read"),
        ("PATCH", "/api/inbox/{item}/", {"is_seen": "yes"}, "is_seen"),
        ("POST", "/api/inbox/{item}/interact/", {"action": "nope"}, "action"),
        ("POST", "/api/inbox/bulk/", {"action": "explode"}, "action"),
        ("POST", "/api/inbox/bulk/", {"action": "read", "filter": {"status": "new"}}, "filter"),
        ("POST", "/api/inbox/bulk/", {"action": "read", "filter": {"tag": "x"}}, "filter"),
        ("POST", "/api/inbox/bulk/", {"action": "read", "filter": [1]}, "filter"),
        ("GET", "/api/inbox/?data=notjson", None, "data"),
        ("GET", "/api/inbox/?data=[1]", None, "data"),
        ("GET", "/api/inbox/?since=yesterday", None, "since"),
        ("GET", "/api/inbox/?until=2026-01-01T00:00:00", None, "until"),
        ("GET", "/api/inbox/?status=hidden", None, "status"),
        ("GET", "/api/inbox/counts/?status=unread", None, "status"),
    ],
)
async def test_bad_input_on_the_new_routes_is_a_422_naming_the_field(
    client, world: World, method, path, body, field
):
    r = await client.request(
        method, path.format(item=world.alice_item), json=body, headers=world.alice.headers
    )
    assert r.status_code == 422, r.text
    assert field in r.json()["errors"] and r.json()["detail"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"url": "javascript:alert(1)"}, "url must be an http(s) URL with a host, or a path"),
        ({"url": "//evil.example/"}, "url must be an http(s) URL with a host, or a path"),
        ({"url": " https://example.com/"}, "url must be an http(s) URL with a host, or a path"),
        ({"actions": [{"id": "a", "label": "A", "url": "/\\evil.example/x"}]}, "actions[0]"),
        ({"actions": []}, "actions must be a list of 1 to 3 actions"),
        ({"actions": [{"id": str(n), "label": "x"} for n in range(4)]}, "1 to 3 actions"),
        ({"actions": [{"id": "a"}]}, "actions[0]: 'label' must be a string"),
        ({"actions": [{"id": "a", "label": "A", "url": "data:text/html,x"}]}, "actions[0]: 'url'"),
        ({"actions": [{"id": "a", "label": "A", "kind": "x"}]}, "unknown fields: kind"),
        ({"actions": [{"id": "a", "label": "A"}, {"id": "a", "label": "B"}]}, "used twice"),
    ],
)
async def test_links_and_actions_are_checked_at_publish(client, world: World, data, problem):
    r = await client.post(
        "/api/notifications/",
        json={"message": "m", "tag": world.news, "data": data},
        headers=world.staff.headers,
    )
    assert r.status_code == 422, r.text
    assert problem in r.json()["errors"]["data"]


@pytest.mark.parametrize("link", LINK_ATTACKS)
async def test_links_that_could_open_another_site_are_refused(client, world: World, link):
    for data, field in (
        ({"url": link}, "url"),
        ({"actions": [{"id": "a", "label": "A", "url": link}]}, "actions[0]: 'url'"),
    ):
        r = await client.post(
            "/api/notifications/",
            json={"message": "m", "tag": world.news, "data": data},
            headers=world.staff.headers,
        )
        assert r.status_code == 422, (link, r.text)
        assert r.json()["errors"]["data"].startswith(
            f"{field} must be an http(s) URL with a host, or a path starting with a single /"
        )


@pytest.mark.parametrize(
    "link",
    [
        "/orders/42",
        "/",
        "/search?q=a b#top",
        "/%5Cnot-a-backslash",
        "HTTPS://Example.com/x",
        "http://[::1]:8080/x",
        "https://user@example.com/",
    ],
)
async def test_links_of_this_site_or_with_a_host_publish(client, world: World, link):
    r = await client.post(
        "/api/notifications/",
        json={"message": "m", "tag": world.news, "data": {"url": link}},
        headers=world.staff.headers,
    )
    assert r.status_code == 201 and r.json()["data"]["url"] == link


async def test_good_links_and_actions_publish(client, world: World):
    data = {
        "url": "/orders/42",
        "actions": [
            {"id": "accept", "label": "Accept", "url": "https://example.com/a?x=1"},
            {"id": "later", "label": "Later"},
        ],
    }
    r = await client.post(
        "/api/notifications/",
        json={"message": "m", "tag": world.news, "data": data},
        headers=world.staff.headers,
    )
    assert r.status_code == 201 and r.json()["data"] == data


@pytest.mark.parametrize("actions", [5, True, {"id": "a", "label": "A"}])
async def test_actions_that_are_no_list_of_objects_offer_nothing(
    server, client, conn, make_user, actions
):
    """Plain SQL skips the check at publish: such `actions` are no 500 and
    close no socket; the item's own link can still be clicked."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await conn.execute(
        "INSERT INTO notification (tag_id, message, data) VALUES ($1, 'odd', $2)",
        news,
        {"actions": actions},
    )
    item = await conn.fetchval("SELECT id FROM user_notification")
    url = f"/api/inbox/{item}/interact/"
    r = await client.post(url, json={"action": "a"}, headers=alice.headers)
    assert r.status_code == 422 and "action" in r.json()["errors"]
    async with open_socket(server, alice.token) as ws:
        await ws.send(type="interact", id=item, action="a")
        assert (await ws.recv())["code"] == "invalid"
        await ws.send(type="interact", id=item)
        frames = await ws.recv_until("counts")
        assert frames[0] == {"type": "interact", "id": item, "action": None}
    r = await client.post(url, json={}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["is_read"]


async def test_a_big_bulk_change_is_one_refresh_per_socket(settings, conn, make_user):
    """Archiving 1,500 items in one statement: the socket gets one `refresh`
    frame and the counts, not 1,500 frames, and stays open."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await conn.execute(
        "INSERT INTO notification (tag_id, message) SELECT $1, 'n' || g "
        "FROM generate_series(1, 1500) g",
        news,
    )
    async with serving(settings) as server, open_socket(server, alice.token) as ws:
        await ws.send(type="bulk", action="archive", filter={"status": "all"})
        answer = {"type": "bulk", "action": "archive", "updated": 1500}
        refresh = {"type": "refresh", "items": 1500}
        counts = {"type": "counts", "unseen": 0, "unread": 0, "total": 0, "archived": 1500}
        frames: list[dict] = []
        while not {answer["type"], "refresh", "counts"} <= {f["type"] for f in frames}:
            frames.append(await ws.recv())
        # The answer and the relay's two frames, in either order.
        assert sorted(frames, key=lambda f: f["type"]) == [answer, counts, refresh]
        assert await ws.request("ping") == {"type": "pong"}


async def test_the_seed_protocol_never_hears_of_the_new_states(server, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await publish(conn, news, "one")
    await publish(conn, news, "two")
    first, second = [
        r["id"] for r in await conn.fetch("SELECT id FROM user_notification ORDER BY id")
    ]
    async with open_socket(server, alice.token, seed=True) as seed:
        for sql in (
            "is_seen = true",
            "interacted_at = now()",
            "is_archived = true",
            "is_archived = false",
        ):
            await conn.execute(f"UPDATE user_notification SET {sql} WHERE id = $1", first)
        await conn.execute("UPDATE user_notification SET is_archived = true WHERE id = $1", second)
        frames = []
        while {"type": "delete", "id": second} not in frames:
            frames.append(await seed.recv())
    assert [(f["type"], f["id"]) for f in frames] == [
        ("read", first),  # interacting reads it
        ("delete", first),  # archived: out of the seed's list
        ("notification", first),  # unarchived: back in it
        ("delete", second),
    ]
