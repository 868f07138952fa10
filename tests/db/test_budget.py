"""The per-user budget on its own (citelink.db.budget): slots, the wait for
one, hand-over, and callers that give up or are cancelled while waiting."""

from __future__ import annotations

import asyncio

import pytest

from citelink.db.budget import Busy, WorkBudget


async def test_a_caller_past_the_limit_waits_for_a_slot_then_gives_up():
    budget = WorkBudget(per_user=1, per_publisher=2, wait_seconds=0.1)
    async with budget.claim("alice"):
        with pytest.raises(Busy):
            async with budget.claim("alice"):
                pass
        async with budget.claim("bob"), budget.claim("carol", publisher=True):
            assert budget.running("bob") == budget.running("carol") == 1
    assert budget.running("alice") == 0


async def test_a_freed_slot_goes_to_the_first_waiter():
    budget = WorkBudget(per_user=1, per_publisher=1, wait_seconds=5)
    order: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with budget.claim("alice"):
            order.append("first")
            await release.wait()

    async def wait(name: str) -> None:
        async with budget.claim("alice"):
            order.append(name)

    tasks = [asyncio.create_task(hold())]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(wait(n)) for n in ("second", "third")]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "second", "third"]
    assert budget.running("alice") == 0


async def test_many_waiters_that_time_out_or_are_cancelled_leave_it_sound():
    """Waiters that gave up are skipped by whoever frees a slot, and a waiter
    dropped that way gives up cleanly (it once raised ValueError: a 500)."""
    budget = WorkBudget(per_user=2, per_publisher=2, wait_seconds=0.05)
    outcomes: list[str] = []

    async def one(hold: float) -> None:
        try:
            async with budget.claim("alice"):
                await asyncio.sleep(hold)
                outcomes.append("ran")
        except Busy:
            outcomes.append("busy")

    tasks = [asyncio.create_task(one(0.06 if k % 3 else 0.01)) for k in range(30)]
    await asyncio.sleep(0.02)
    tasks[-1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results)
    assert "ran" in outcomes and "busy" in outcomes
    assert budget.running("alice") == 0
    async with budget.claim("alice"), budget.claim("alice"):
        pass


async def test_a_waiter_cancelled_as_the_slot_is_freed_is_just_cancelled():
    """The waiter's future is cancelled, then the holder leaves (and drops it)
    before the waiter runs again: the waiter ends cancelled, nothing else."""
    budget = WorkBudget(per_user=1, per_publisher=1, wait_seconds=5)

    async def wait() -> None:
        async with budget.claim("alice"):
            pass

    async with budget.claim("alice"):
        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0)
        waiter.cancel()
    (outcome,) = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    assert budget.running("alice") == 0
