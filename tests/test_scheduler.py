"""Durable timers: due rows claimed once, retried on failure, never lost to a crash."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.scheduler import RetryLater, Scheduler, retry_delay
from bot.store import Store, Timer
from tests.support.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[Store]:
    store = Store(store_url, clock=clock)
    yield store
    store.close()


def scheduler_on(store: Store, clock: ManualClock, owner: str = "bot-a") -> Scheduler:
    return Scheduler(store, clock=clock, owner=owner)


def sweep(scheduler: Scheduler) -> int:
    async def once() -> int:
        claimed = await scheduler.sweep()
        await scheduler.settle()
        return claimed

    return asyncio.run(once())


def test_a_timer_fires_once_when_due_and_not_before(store: Store, clock: ManualClock) -> None:
    fired: list[Timer] = []
    scheduler = scheduler_on(store, clock)

    async def page(timer: Timer) -> None:
        fired.append(timer)

    scheduler.on("escalation.step", page)
    store.schedule_timer("escalation.step", "INC-1", clock() + timedelta(minutes=10), {"step": 1})

    assert sweep(scheduler) == 0
    clock.advance(minutes=9, seconds=59)
    assert sweep(scheduler) == 0
    clock.advance(seconds=1)
    assert sweep(scheduler) == 1
    clock.advance(hours=1)
    assert sweep(scheduler) == 0
    assert [(t.key, t.payload) for t in fired] == [("INC-1", {"step": 1})]
    assert store.pending_timers() == []


def test_scheduling_again_replaces_the_pending_timer(store: Store, clock: ManualClock) -> None:
    store.schedule_timer("approval.expire", "REQ-7", clock() + timedelta(minutes=30))
    store.schedule_timer("approval.expire", "REQ-7", clock() + timedelta(minutes=5))
    store.schedule_timer("approval.expire", "REQ-8", clock() + timedelta(minutes=30))
    assert [(t.key, t.due_at - clock()) for t in store.pending_timers("approval.expire")] == [
        ("REQ-7", timedelta(minutes=5)),
        ("REQ-8", timedelta(minutes=30)),
    ]
    assert store.cancel_timers("approval.expire", "REQ-7") == 1
    assert [t.key for t in store.pending_timers()] == ["REQ-8"]


def test_a_failing_handler_is_retried_with_backoff_not_dropped(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[int] = []
    scheduler = scheduler_on(store, clock)

    async def page(timer: Timer) -> None:
        tries.append(timer.attempts)
        if len(tries) < 3:
            raise ConnectionError("Slack is down")

    scheduler.on("escalation.step", page)
    store.schedule_timer("escalation.step", "INC-2", clock())
    with caplog.at_level(logging.ERROR):
        assert sweep(scheduler) == 1
    assert "escalation.step" in caplog.text and "trying again in 5s" in caplog.text
    assert sweep(scheduler) == 0  # not before the backoff
    clock.advance(seconds=5)
    assert sweep(scheduler) == 1
    clock.advance(seconds=10)
    assert sweep(scheduler) == 1
    assert tries == [1, 2, 3]
    assert store.pending_timers() == []
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 10)] == [5, 10, 20, 300]


def test_a_claim_whose_owner_died_comes_back_after_the_lease(
    store: Store, clock: ManualClock
) -> None:
    fired: list[str] = []
    store.schedule_timer("escalation.step", "INC-3", clock())
    # Bot A claims the timer and dies before firing it.
    (claimed,) = store.claim_due_timers("bot-a", clock(), timedelta(minutes=5))

    survivor = scheduler_on(store, clock, owner="bot-b")

    async def page(timer: Timer) -> None:
        fired.append(timer.key)

    survivor.on("escalation.step", page)
    assert sweep(survivor) == 0  # still leased to A
    clock.advance(minutes=5, seconds=1)
    assert sweep(survivor) == 1
    assert fired == ["INC-3"]
    assert not store.finish_timer(claimed.id, "bot-a")  # A's claim is gone


def test_two_replicas_sweeping_one_database_fire_each_timer_once(
    store_url: str, clock: ManualClock
) -> None:
    setup = Store(store_url, clock=clock)
    for n in range(40):
        setup.schedule_timer("escalation.step", f"INC-{n}", clock())
    setup.close()

    fired: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def replica(owner: str) -> None:
        store = Store(store_url, clock=clock)
        scheduler = scheduler_on(store, clock, owner=owner)

        async def page(timer: Timer) -> None:
            with lock:
                fired.append((owner, timer.key))

        scheduler.on("escalation.step", page)
        start.wait()
        while sweep(scheduler):
            pass
        store.close()

    threads = [threading.Thread(target=replica, args=(o,)) for o in ("bot-a", "bot-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = sorted(key for _, key in fired)
    assert keys == sorted(f"INC-{n}" for n in range(40))


def test_a_timer_with_no_handler_waits_for_a_bot_that_knows_it(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = scheduler_on(store, clock)
    store.schedule_timer("from.a.newer.version", "X", clock())
    with caplog.at_level(logging.ERROR):
        assert sweep(scheduler) == 1
    assert "has no handler" in caplog.text
    (pending,) = store.pending_timers()
    assert pending.due_at == clock() + timedelta(minutes=5)


def test_the_running_scheduler_fires_a_timer_when_it_falls_due(tmp_path: Path) -> None:
    # Real time, short span: the timer is due 0.2 s after it is set, and the periodic sweep
    # is 30 s away, so only the sweep the timer itself asked for can fire it in time.
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    scheduler = Scheduler(store, sweep_every=timedelta(seconds=30))

    async def scenario() -> None:
        fired = asyncio.Event()

        async def page(timer: Timer) -> None:
            fired.set()

        scheduler.on("escalation.step", page)
        scheduler.start()
        try:
            due = store.clock() + timedelta(seconds=0.2)
            await scheduler.schedule("escalation.step", "INC-9", due)
            await asyncio.wait_for(fired.wait(), timeout=10)
        finally:
            await scheduler.stop()

    asyncio.run(scenario())
    assert store.pending_timers() == []
    store.close()


def test_a_handler_that_must_wait_is_retried_after_its_delay_without_an_error(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[int] = []
    scheduler = scheduler_on(store, clock)

    async def post(timer: Timer) -> None:
        tries.append(timer.attempts)
        if len(tries) == 1:
            raise RetryLater("another replica is posting", timedelta(seconds=2))

    scheduler.on("incident.sync", post)
    store.schedule_timer("incident.sync", "INC-1/1", clock())
    with caplog.at_level(logging.INFO):
        assert sweep(scheduler) == 1
    assert "deferred: another replica is posting" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    clock.advance(seconds=1)
    assert sweep(scheduler) == 0
    clock.advance(seconds=1)
    assert sweep(scheduler) == 1
    assert tries == [1, 2]
    assert store.pending_timers() == []


def test_setting_a_timer_from_its_own_handler_leaves_the_running_one_to_finish(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # An escalation step sets the next deadline under the same key while it runs.
    fired: list[int] = []
    scheduler = scheduler_on(store, clock)

    async def step(timer: Timer) -> None:
        fired.append(int(str(timer.payload["level"])))
        store.schedule_timer(
            "incident.deadline", "INC-1", clock() + timedelta(minutes=10), {"level": 2}
        )

    scheduler.on("incident.deadline", step)
    store.schedule_timer("incident.deadline", "INC-1", clock(), {"level": 1})
    with caplog.at_level(logging.WARNING):
        assert sweep(scheduler) == 1
    assert "lease was lost" not in caplog.text
    (pending,) = store.pending_timers("incident.deadline")
    assert pending.payload == {"level": 2}
    clock.advance(minutes=10)
    assert sweep(scheduler) == 1
    assert fired[:2] == [1, 2]


class CountingStore(Store):
    """The real store, counting the sweeps' queries: how often the scheduler wakes."""

    claims = 0

    def claim_due_timers(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.claims += 1
        return super().claim_due_timers(*args, **kwargs)


def test_an_idle_scheduler_sweeps_once_then_sleeps_until_a_timer_is_due(tmp_path: Path) -> None:
    # Real time: nothing is due, so after its first sweep the scheduler (its defaults) asks the
    # store nothing until the timer set 1.5 s later falls due.
    store = CountingStore(f"sqlite:///{tmp_path / 'bot.db'}")
    scheduler = Scheduler(store)

    async def scenario() -> None:
        fired = asyncio.Event()

        async def page(timer: Timer) -> None:
            fired.set()

        scheduler.on("escalation.step", page)
        scheduler.start()
        try:
            while store.claims < 1:
                await asyncio.sleep(0.01)  # until the first sweep (a condition, not a wait)
            await scheduler.schedule(
                "escalation.step", "INC-1", store.clock() + timedelta(seconds=1.5)
            )
            await asyncio.wait_for(fired.wait(), timeout=10)
        finally:
            await scheduler.stop()

    asyncio.run(scenario())
    assert store.claims == 2  # the first sweep, then the one for the timer: no polling between
    store.close()


def test_a_timer_set_by_another_replica_wakes_this_one_on_postgresql(
    postgres_database: str,
) -> None:
    # The other replica writes the row (and its NOTIFY) straight through its own store; this
    # scheduler's safety poll is 30 s away, so only the notice can fire the timer in time.
    here, there = Store(postgres_database), Store(postgres_database)
    scheduler = Scheduler(here, sweep_every=timedelta(seconds=30), owner="bot-here")

    async def scenario() -> None:
        fired = asyncio.Event()

        async def page(timer: Timer) -> None:
            fired.set()

        scheduler.on("escalation.step", page)
        scheduler.start()
        try:
            await scheduler.settle()
            while not _listening(here):
                await asyncio.sleep(0.05)  # until its LISTEN is in (a condition)
            due = there.clock() + timedelta(seconds=0.3)
            await asyncio.to_thread(there.schedule_timer, "escalation.step", "INC-7", due)
            await asyncio.wait_for(fired.wait(), timeout=10)
        finally:
            await scheduler.stop()

    asyncio.run(scenario())
    assert here.pending_timers() == []
    here.close()
    there.close()


def _listening(store: Store) -> bool:
    """Whether a session of this database LISTENs (its last statement was the LISTEN)."""
    with store.engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE 'LISTEN%'"
                )
            ).scalar()
        )
