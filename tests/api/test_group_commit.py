"""Group commit through the API (citelink.db.group_commit): publishes of one
caller that wait while its two statements run share the next one; each gets
its own notification, its own error, its own audit row, and its recipients
their items in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from citelink.api.notifications import _one_of_them
from citelink.identity.callers import CallerUnconfirmed
from tests.support.data import create_user, subscribe
from tests.support.waiting import wait_until
from tests.support.world import World


async def waiting_publishes(client: httpx.AsyncClient, world: World) -> float:
    r = await client.get("/metrics", headers=world.staff.headers)
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == "citelink_publishes_waiting":
                return sample.value
    raise AssertionError("no citelink_publishes_waiting")


async def publish_while_held(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    holder: asyncpg.Connection,
    world: World,
    headers: dict[str, str],
    tags: list[int],
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> list[httpx.Response]:
    """Two publishes to `news` that wait for bob's counter row, held by
    `holder`; then one to each of `tags`, which wait for them; then
    `meanwhile()`; then the row is let go. The answers, in that order."""

    async def post(tag: int, message: str) -> httpx.Response:
        body = {"tag": tag, "message": message, "data": {"said": message}}
        return await client.post("/api/notifications/", json=body, headers=headers)

    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT FROM inbox_count WHERE user_id = $1 FOR UPDATE", world.bob.id)
    first = [asyncio.create_task(post(world.news, f"first {k}")) for k in range(2)]

    async def held() -> bool:
        # One waits for the holder, the other for the first (in the row's queue).
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return count == 2

    await wait_until(held)
    then = [asyncio.create_task(post(tag, f"then {k}")) for k, tag in enumerate(tags)]
    await wait_until(lambda: _equal(waiting_publishes(client, world), len(tags)))
    if meanwhile is not None:
        await meanwhile()
    await tx.rollback()
    return [await t for t in (*first, *then)]


async def _equal(figure, value: float) -> bool:
    return await figure == value


@pytest.fixture
async def holder(db_url: str):
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


async def test_the_waiting_publishes_share_one_statement_and_each_gets_its_own(
    client: httpx.AsyncClient, conn, holder, world: World
):
    answers = await publish_while_held(
        client, conn, holder, world, world.staff.headers, [world.news] * 5
    )
    assert [r.status_code for r in answers] == [201] * 7, [r.text for r in answers]
    notes = [r.json() for r in answers]
    assert [n["message"] for n in notes] == ["first 0", "first 1", *(f"then {k}" for k in range(5))]
    assert {n["recipients"] for n in notes} == {2}
    assert all(n["data"] == {"said": n["message"]} for n in notes)
    shared = [n["id"] for n in notes[2:]]
    # One statement: one transaction wrote them all, audited as the caller's.
    assert (
        await conn.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM notification WHERE id = ANY ($1)", shared
        )
        == 1
    )
    audit = await conn.fetch(
        "SELECT object_id, actor_id FROM audit_log WHERE resource = 'notification' "
        "AND action = 'create' AND object_id = ANY ($1)",
        shared,
    )
    assert sorted(audit) == [(i, world.staff.id) for i in sorted(shared)]
    # Each recipient has an item of each, at gapless positions in id order.
    for user in (world.alice, world.bob):
        rows = await conn.fetch(
            "SELECT notification_id, position FROM user_notification WHERE user_id = $1 "
            "ORDER BY position",
            user.id,
        )
        assert [r["position"] for r in rows] == list(range(1, len(rows) + 1))
        assert set(shared) <= {r["notification_id"] for r in rows}


async def test_a_publish_refused_in_a_shared_statement_is_told_apart(
    client: httpx.AsyncClient, conn, holder, world: World
):
    tags = [world.news, world.news, 10**9, world.news]  # no tag 10**9
    answers = await publish_while_held(client, conn, holder, world, world.staff.headers, tags)
    statuses = [r.status_code for r in answers]
    assert statuses == [201, 201, 201, 201, 422, 201], [r.text for r in answers]
    assert answers[4].json() == {"detail": "invalid request body", "errors": {"tag": "no such tag"}}
    assert [r.json()["message"] for r in answers[2:4]] == ["then 0", "then 1"]
    assert answers[5].json()["message"] == "then 3"


async def test_an_api_keys_publishes_share_statements_audited_as_the_key(
    client: httpx.AsyncClient, conn, holder, world: World
):
    r = await client.post(
        "/api/keys/", json={"name": "backend", "scopes": ["publish"]}, headers=world.staff.headers
    )
    key = r.json()
    headers = {"Authorization": f"Bearer {key['key']}"}
    answers = await publish_while_held(client, conn, holder, world, headers, [world.news] * 3)
    assert [r.status_code for r in answers] == [201] * 5
    shared = [r.json()["id"] for r in answers[2:]]
    rows = await conn.fetch(
        "SELECT actor_id, api_key_id FROM audit_log WHERE resource = 'notification' "
        "AND action = 'create' AND object_id = ANY ($1)",
        shared,
    )
    assert [tuple(r) for r in rows] == [(None, key["id"])] * 3


async def test_another_publisher_is_not_held_by_ones_waiting_publishes(
    client: httpx.AsyncClient, conn, holder, world: World
):
    other = await create_user(conn, "other-publisher", staff=True)
    carol = await create_user(conn, "carol")
    # Carol's alone: none of her rows is held (the first two publishes hold
    # alice's counter row while they wait for bob's).
    tag = await subscribe(conn, carol.id, "carol's")
    answered: list[httpx.Response] = []

    async def other_publishes() -> None:
        # Answered while the staff's publishes wait.
        body = {"tag": tag, "message": "from another publisher"}
        answered.append(await client.post("/api/notifications/", json=body, headers=other.headers))

    answers = await publish_while_held(
        client, conn, holder, world, world.staff.headers, [world.news] * 4, other_publishes
    )
    assert answered[0].status_code == 201 and answered[0].json()["recipients"] == 1
    assert [r.status_code for r in answers] == [201] * 6


@pytest.mark.parametrize(
    ("error", "alone"),
    [
        (asyncpg.ForeignKeyViolationError("no such tag"), True),
        (asyncpg.CheckViolationError("refused"), True),
        (asyncpg.DeadlockDetectedError("lost a race"), True),
        (CallerUnconfirmed(), True),
        # It may have committed, or it is everyone's: never run again.
        (asyncpg.AdminShutdownError("terminating"), False),
        (asyncpg.ConnectionFailureError("gone"), False),
        (asyncpg.QueryCanceledError("timeout"), False),
        (ConnectionResetError(), False),
        (TimeoutError(), False),
    ],
)
def test_only_a_refusal_that_rolled_back_runs_each_publish_again(error, alone):
    assert _one_of_them(error) is alone
