"""The exec-channel budget of one SSH connection: at most ``limit`` at once, waiters served in
order, and a refusal by the login node brings the limit down to what it allowed."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_hpc_manager.login_node import SessionBudget


def test_at_most_limit_at_once_and_waiters_in_order():
    async def main():
        budget = SessionBudget(2)
        order: list[int] = []
        running = 0
        most = 0

        async def command(i: int) -> None:
            nonlocal running, most
            await budget.acquire()
            try:
                running += 1
                most = max(most, running)
                order.append(i)
                await asyncio.sleep(0.01)
            finally:
                running -= 1
                budget.release()

        await asyncio.gather(*(command(i) for i in range(7)))
        assert most == 2 and order == list(range(7)) and budget.in_use == 0

    asyncio.run(main())


def test_a_refusal_teaches_the_limit_and_never_goes_below_one():
    budget = SessionBudget(8)
    assert budget.refused(2) == 2  # refused while two others ran: the login node allows two
    assert budget.refused(0) == 1  # (never below one)
    assert budget.refused(5) == 1  # (never raised by a later refusal)


def test_a_cancelled_waiter_passes_its_turn_on():
    async def main():
        budget = SessionBudget(1)
        await budget.acquire()
        first = asyncio.ensure_future(budget.acquire())
        second = asyncio.ensure_future(budget.acquire())
        await asyncio.sleep(0)
        first.cancel()
        budget.release()
        await asyncio.wait_for(second, 1)  # the turn went to the next waiter
        assert budget.in_use == 1
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())
