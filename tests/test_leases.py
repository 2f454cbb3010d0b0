"""Leases: one holder at a time, a token per holder, and late writes of a deposed holder refused.

Store level, on SQLite and PostgreSQL; the replicas themselves (real processes racing for the
checking lease) are in tests/test_replicas.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bot.config import load_config
from bot.runbook.alerts.alerts import Alerts
from bot.runbook.alerts.checking import lease_timing
from bot.runbook.alerts.states import Metric, Observation, Reading
from bot.scheduler import Scheduler
from bot.store import LeaseLost, StaleAlertStates, Store, Timer, TimerRecord
from tests.conftest import EXAMPLE_CONFIG
from tests.support.clock import ManualClock

TTL = timedelta(seconds=15)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[Store]:
    store = Store(store_url, clock=clock)
    yield store
    store.close()


def test_one_holder_at_a_time_and_a_new_token_for_each(store: Store, clock: ManualClock) -> None:
    a = store.acquire_lease("checking", "bot-a", TTL)
    assert a is not None and a.token == 1
    assert store.acquire_lease("checking", "bot-b", TTL) is None
    assert store.acquire_lease("checking", "bot-a", TTL) == a  # asking again renews, same token
    clock.advance(seconds=14)
    assert store.renew_lease(a, TTL)
    clock.advance(seconds=14)
    assert store.acquire_lease("checking", "bot-b", TTL) is None  # renewed: still A's
    clock.advance(seconds=2)  # A stopped renewing: it ran out
    b = store.acquire_lease("checking", "bot-b", TTL)
    assert b is not None and b.token == 2
    assert not store.renew_lease(a, TTL)  # A learns it lost the lease
    store.release_lease(a)  # a deposed holder cannot give away what it no longer has
    assert store.acquire_lease("checking", "bot-c", TTL) is None
    store.release_lease(b)  # a clean stop: free at once
    c = store.acquire_lease("checking", "bot-c", TTL)
    assert c is not None and c.token == 3
    lease = store.lease("checking")
    assert lease is not None and (lease.holder, lease.token) == ("bot-c", 3)


def alerts_of(store: Store, clock: ManualClock) -> Alerts:
    return Alerts(load_config(EXAMPLE_CONFIG), store, clock=clock)


def failing(env: str = "staging") -> list[Observation]:
    return [Observation(env, Metric.HEALTH, Reading(problem="healthz answered HTTP 503"))]


def test_a_deposed_checkers_late_write_is_refused(store: Store, clock: ManualClock) -> None:
    async def scenario() -> None:
        a, b = alerts_of(store, clock), alerts_of(store, clock)
        fence_a = store.acquire_lease("checking", "bot-a", TTL)
        assert fence_a is not None
        await a.take_over(fence_a)
        await a.observe(failing())
        clock.advance(seconds=16)  # A stalls past its lease; B takes over
        fence_b = store.acquire_lease("checking", "bot-b", TTL)
        assert fence_b is not None
        await b.take_over(fence_b)
        fired = await b.observe(failing())  # the second breach in a row: B fires the alert
        assert [t.change.value for _, t in fired] == ["fired"]

        with pytest.raises(LeaseLost):  # A wakes up and writes what it saw: refused
            await a.observe(failing())
        assert len(store.alerts()) == 1
        state = store.alert_state("staging", Metric.HEALTH.value)
        assert state is not None and state.version == 2 and len(state.recent) == 2

        a.stand_down()
        with pytest.raises(LeaseLost):  # stood down: nothing is even tried
            await a.observe(failing())

    asyncio.run(scenario())


def test_alert_state_writes_name_the_version_they_read(store: Store, clock: ManualClock) -> None:
    async def scenario() -> None:
        a, b = alerts_of(store, clock), alerts_of(store, clock)  # no lease: versions alone
        await a.observe(failing())
        await b.observe(failing())  # b read version 1, wrote 2
        with pytest.raises(StaleAlertStates):  # a still holds version 1
            await a.observe(failing())
        assert len(store.alerts()) == 1  # b's alert; a's refused cycle wrote nothing
        await a.observe(failing())  # a read the states again: its next readings count
        state = store.alert_state("staging", Metric.HEALTH.value)
        assert state is not None and state.version == 3 and len(state.recent) == 2

    asyncio.run(scenario())


def test_lease_timing_takes_over_within_one_check_interval() -> None:
    for interval_s in (1, 2, 3, 15, 30, 60, 300):
        ttl, renew = lease_timing(timedelta(seconds=interval_s))
        assert ttl <= timedelta(seconds=15)
        assert ttl + renew <= max(timedelta(seconds=interval_s) * 2 / 3, timedelta(seconds=1.34))


def claimed_until(store: Store, key: str) -> datetime:
    with store._session() as session:
        value = session.scalar(select(TimerRecord.claimed_until).where(TimerRecord.key == key))
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_a_running_handler_keeps_its_claim_and_one_that_lost_it_stops(store_url: str) -> None:
    # Real time here: the lease is 0.3 s, renewed every 0.1 s while the handler runs.
    store = Store(store_url)
    lease = timedelta(seconds=0.3)

    async def scenario() -> None:
        started, release = asyncio.Event(), asyncio.Event()
        ran: list[str] = []
        cancelled: list[int] = []

        async def slow(timer: Timer) -> None:
            ran.append(timer.key)
            started.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.append(timer.id)
                raise

        a = Scheduler(store, lease=lease, owner="bot-a")
        b = Scheduler(store, lease=lease, owner="bot-b")
        for scheduler in (a, b):
            scheduler.on("slow", slow)
        store.schedule_timer("slow", "one", store.clock())
        store.schedule_timer("slow", "two", store.clock())
        assert await a.sweep() == 2
        await asyncio.wait_for(started.wait(), 5)
        first = claimed_until(store, "one")
        # B sweeps while A's handlers run, until A's claims were renewed past three leases:
        # B never finds them free.
        while claimed_until(store, "one") < first + 3 * lease:
            assert await b.sweep() == 0
            await asyncio.sleep(0.05)  # polling for the condition above
        # A stalled (as a paused process would): another replica took "two" over.
        (two,) = store.pending_timers(key="two")
        with store._session() as session, session.begin():
            session.execute(
                update(TimerRecord)
                .where(TimerRecord.id == two.id)
                .values(claimed_by="bot-b", attempts=TimerRecord.attempts + 1)
            )
        while not cancelled:  # A stops acting on it at its next renewal
            await asyncio.sleep(0.05)  # polling for the condition
        assert cancelled == [two.id]
        release.set()
        await a.settle()
        assert [t.key for t in store.pending_timers()] == ["two"]  # still B's to fire
        assert sorted(ran) == ["one", "two"]

    asyncio.run(scenario())
    store.close()
