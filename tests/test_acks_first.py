"""Acks go first (bot/acks_first.py): background work waits for the acks of a burst."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import time

import pytest

from bot.acks_first import ACKS_FIRST, AcksFirst
from bot.workers import WorkerPool


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def background(coroutine) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
    """A task of its own, as background work is: not on the way to any request's ack (the
    requests below arrive in the test's own task, whose context tasks would copy)."""
    return asyncio.create_task(coroutine, context=contextvars.Context())


def test_no_ack_pending_means_no_wait() -> None:
    async def scenario() -> None:
        gate = AcksFirst(quiet_s=10, longest_wait_s=10)
        async with asyncio.timeout(1):
            await gate.turn()

    run(scenario())


def test_work_waits_until_every_pending_ack_is_done_and_the_quiet_has_passed() -> None:
    async def scenario() -> list[str]:
        gate = AcksFirst(quiet_s=0.05, longest_wait_s=30)
        order: list[str] = []
        first, second = gate.arrived(), gate.arrived()

        async def work() -> None:
            await gate.turn()
            order.append("work")

        waiting = background(work())
        await asyncio.sleep(0)
        order.append("ack 1")
        first()
        first()  # a second call changes nothing: the other request is still pending
        await asyncio.sleep(0)
        assert gate.pending == 1 and not waiting.done()
        order.append("ack 2")
        second()
        acked_at = time.monotonic()
        await waiting
        assert time.monotonic() - acked_at >= 0.05 * 0.9  # the quiet after the last ack
        return order

    assert run(scenario()) == ["ack 1", "ack 2", "work"]


def test_a_new_ack_in_the_quiet_keeps_the_work_waiting() -> None:
    async def scenario() -> list[str]:
        gate = AcksFirst(quiet_s=0.05, longest_wait_s=30)
        order: list[str] = []
        gate.arrived()()  # acked just now: the quiet has begun

        async def work() -> None:
            await gate.turn()
            order.append("work")

        waiting = background(work())
        await asyncio.sleep(0)
        late = gate.arrived()  # the burst's next request, within the quiet
        await asyncio.sleep(0.1)  # twice the quiet: still held by the pending ack
        assert not waiting.done()
        order.append("late ack")
        late()
        await waiting
        return order

    assert run(scenario()) == ["late ack", "work"]


def test_work_never_waits_longer_than_the_longest_wait() -> None:
    async def scenario() -> None:
        gate = AcksFirst(quiet_s=0.01, longest_wait_s=0.1)
        acked = gate.arrived()  # a request whose ack does not come
        async with asyncio.timeout(5):
            await gate.turn()
        acked()

    run(scenario())


def test_on_its_own_way_to_the_ack_a_request_never_waits_for_itself() -> None:
    async def scenario() -> None:
        gate = AcksFirst(quiet_s=10, longest_wait_s=10)
        acked = gate.arrived()
        async with asyncio.timeout(1):
            await gate.turn()  # a handler posting before it acks
        acked()

        async def another_task() -> None:
            await gate.turn()

        # Another request's ack holds work that is not on its way (a task of its own).
        other = gate.arrived()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await background(another_task())
        other()

    run(scenario())


def test_a_new_event_loop_starts_with_nothing_pending() -> None:
    async def leave_one_pending() -> None:
        ACKS_FIRST.arrived()

    async def wait_for_turn() -> None:
        async with asyncio.timeout(0.2):
            await ACKS_FIRST.turn()

    run(leave_one_pending())
    run(wait_for_turn())


def test_a_burst_is_acked_before_any_of_its_jobs_starts() -> None:
    """The pool's jobs start after the acks (the dispatcher's hand-off, without Slack)."""

    async def scenario() -> list[str]:
        pool = WorkerPool(size=4)
        pool.start()
        order: list[str] = []
        try:
            pending = [ACKS_FIRST.arrived() for _ in range(3)]
            for n in range(3):

                async def job(n: int = n) -> None:
                    order.append(f"job {n}")

                pool.submit(f"job {n}", job)
                await asyncio.sleep(0.01)
            for n, acked in enumerate(pending):
                order.append(f"ack {n}")
                acked()
            await pool.join()
        finally:
            await pool.stop(grace_s=1)
        return order

    order = run(scenario())
    assert order[:3] == ["ack 0", "ack 1", "ack 2"], order
    assert sorted(order[3:]) == ["job 0", "job 1", "job 2"]


def test_the_collector_waits_while_acks_are_pending_at_most_the_longest_wait() -> None:
    async def scenario() -> None:
        gate = AcksFirst(quiet_s=0.01, longest_wait_s=0.2)
        assert gc.isenabled()
        first, second = gate.arrived(), gate.arrived()
        assert not gc.isenabled()
        first()
        assert not gc.isenabled()  # one still pending
        second()
        assert gc.isenabled()
        gate.arrived()  # never acked
        assert not gc.isenabled()
        async with asyncio.timeout(5):
            while not gc.isenabled():
                await asyncio.sleep(0.01)  # a condition polled: the bound is what is tested

    run(scenario())
    assert gc.isenabled()


def test_a_collector_switched_off_by_someone_else_stays_off() -> None:
    async def scenario() -> None:
        gate = AcksFirst(quiet_s=0.01, longest_wait_s=0.2)
        gate.arrived()()

    gc.disable()
    try:
        run(scenario())
        assert not gc.isenabled()
    finally:
        gc.enable()
