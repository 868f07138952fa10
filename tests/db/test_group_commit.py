"""Group commit (citelink.db.group_commit) on its own, with statements played
by coroutines that finish when the test says: who runs alone, who waits,
who shares, and who gets which answer or error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from citelink.db.group_commit import GroupCommit
from tests.support.waiting import wait_until


class Refused(Exception):
    """A statement refused one of its rows (the database rolled it back)."""


class Lost(Exception):
    """A failure that is no row's own (a connection lost)."""


class Statements:
    """`one` and `many` of a GroupCommit: each call records its args and
    waits until `finish()`; an arg "bad" fails its statement with Refused."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.fail_many: Exception | None = None

    async def one(self, args: Any) -> str:
        self.calls.append([args])
        await self.gate.wait()
        if args == "bad":
            raise Refused(args)
        return f"done {args}"

    async def many(self, batch: list[Any]) -> list[str]:
        self.calls.append(list(batch))
        await self.gate.wait()
        if self.fail_many is not None:
            raise self.fail_many
        if "bad" in batch:
            raise Refused(batch)
        return [f"done {a}" for a in batch]

    def commit(self) -> GroupCommit[str]:
        return GroupCommit(self.one, self.many, lambda exc: isinstance(exc, Refused), slots=2)


async def started(statements: Statements, count: int) -> None:
    await wait_until(lambda: len(statements.calls) >= count, interval=0)


async def test_a_lone_publish_runs_at_once_and_alone():
    s = Statements()
    s.gate.set()
    commit = s.commit()
    assert await commit.run("staff", "a") == "done a"
    assert s.calls == [["a"]] and commit.shared == 0 and commit.waiting == 0


async def test_the_publishes_that_wait_for_a_slot_share_the_next_statement():
    s = Statements()
    commit = s.commit()
    first = [asyncio.create_task(commit.run("staff", a)) for a in "ab"]
    await started(s, 2)
    # Both slots taken: these wait, and another publisher is not held up.
    waiting = [asyncio.create_task(commit.run("staff", a)) for a in "cdef"]
    other = asyncio.create_task(commit.run("key", "z"))
    await started(s, 3)
    await asyncio.sleep(0)
    assert commit.waiting == 4
    s.gate.set()
    answers = await asyncio.gather(*first, *waiting, other)
    assert answers == [f"done {a}" for a in "abcdefz"]
    assert sorted(s.calls) == [["a"], ["b"], ["c", "d", "e", "f"], ["z"]]
    assert commit.shared == 4 and commit.waiting == 0


async def test_a_refused_row_is_told_apart_and_the_others_are_done():
    s = Statements()
    commit = s.commit()
    first = [asyncio.create_task(commit.run("staff", a)) for a in "ab"]
    await started(s, 2)
    waiting = [asyncio.create_task(commit.run("staff", a)) for a in ("c", "bad", "d")]
    await asyncio.sleep(0)
    s.gate.set()
    answers = await asyncio.gather(*first, *waiting, return_exceptions=True)
    assert answers[:3] == ["done a", "done b", "done c"] and answers[4] == "done d"
    assert isinstance(answers[3], Refused) and answers[3].args == ("bad",)
    # The shared statement, then each of its publishes alone.
    assert ["c", "bad", "d"] in s.calls and ["bad"] in s.calls
    assert commit.shared == 0


async def test_a_failure_that_is_no_rows_own_is_everyones_and_nothing_runs_twice():
    s = Statements()
    s.fail_many = Lost("connection lost")
    commit = s.commit()
    first = [asyncio.create_task(commit.run("staff", a)) for a in "ab"]
    await started(s, 2)
    waiting = [asyncio.create_task(commit.run("staff", a)) for a in "cd"]
    await asyncio.sleep(0)
    s.gate.set()
    answers = await asyncio.gather(*first, *waiting, return_exceptions=True)
    assert answers[:2] == ["done a", "done b"]
    assert all(isinstance(a, Lost) for a in answers[2:])
    assert sorted(s.calls) == [["a"], ["b"], ["c", "d"]]


async def test_at_most_most_share_a_statement():
    s = Statements()
    commit = GroupCommit(s.one, s.many, lambda exc: False, slots=1, most=3)
    first = asyncio.create_task(commit.run("staff", 0))
    await started(s, 1)
    waiting = [asyncio.create_task(commit.run("staff", k)) for k in range(1, 8)]
    await asyncio.sleep(0)
    s.gate.set()
    assert await asyncio.gather(first, *waiting) == [f"done {k}" for k in range(8)]
    assert s.calls == [[0], [1, 2, 3], [4, 5, 6], [7]]


async def test_a_cancelled_waiter_does_not_stop_the_others():
    s = Statements()
    commit = s.commit()
    first = [asyncio.create_task(commit.run("staff", a)) for a in "ab"]
    await started(s, 2)
    gone = asyncio.create_task(commit.run("staff", "c"))
    stays = asyncio.create_task(commit.run("staff", "d"))
    await asyncio.sleep(0)
    gone.cancel()
    s.gate.set()
    assert await asyncio.gather(*first, stays) == ["done a", "done b", "done d"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert all("c" not in call for call in s.calls)  # not published for nobody
