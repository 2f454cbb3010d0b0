"""Abuse bounded, part by part: the sliding window, the environment slots, the workers' lanes
(presses never behind slash-command work; a full lane says when to try again), watches per
user, and fallback texts that ping nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import LimitSettings, Rate
from bot.runbook.health.watch import Watches, WatchRefused
from bot.slack.blocks import fallback_text, message, section
from bot.slack.limits import EnvironmentSlots, Limits, wait_for
from bot.store import Store
from bot.workers import Busy, WorkerPool

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_the_window_counts_the_last_period_and_says_when_it_frees() -> None:
    rate = Rate(count=3, per=timedelta(minutes=10))
    times = [T0 - timedelta(minutes=m) for m in (11, 9, 5, 1)]  # the first is outside
    assert wait_for(rate, times, T0) == 60.0  # the one 9 minutes ago leaves in 1 minute
    assert wait_for(rate, times[:3], T0) is None
    assert wait_for(rate, [], T0) is None
    assert wait_for(Rate(count=1, per=timedelta(seconds=30)), [T0], T0) == 30.0


def test_one_ssh_opening_command_per_environment() -> None:
    slots = EnvironmentSlots(1)
    release = slots.take("staging", "/health staging diagnose", "U1")
    assert callable(release)
    busy = slots.take("staging", "/rollback list staging", "U2")
    assert isinstance(busy, str) and "/health staging diagnose" in busy and "<@U1>" in busy
    assert callable(slots.take("production", "/health production logs", "U2"))
    release()
    assert slots.running("staging") == 0
    assert callable(slots.take("staging", "/rollback list staging", "U2"))


def test_a_press_never_waits_behind_slash_command_work() -> None:
    async def scenario() -> tuple[list[str], int | None, str]:
        pool = WorkerPool(size=2, press_size=1, queue_limit=3)
        pool.start()
        release = asyncio.Event()
        done: list[str] = []

        async def slow() -> None:
            await release.wait()
            done.append("command")

        async def press() -> None:
            done.append("press")

        for n in range(2):  # two running …
            pool.submit(f"health-{n}", slow)
        while pool.backlog:
            await asyncio.sleep(0)  # a condition: both workers took theirs
        for n in range(2, 5):  # … three waiting: the short lane is full
            pool.submit(f"health-{n}", slow)
        with pytest.raises(Busy) as refused:
            pool.submit("health-6", slow)
        full_for = pool.busy_for("short")
        pool.submit("approve", press, lane="press")
        while not done:
            await asyncio.sleep(0)  # a condition: the press ran, the commands still wait
        release.set()
        await pool.join()
        await pool.stop()
        return done, full_for, str(refused.value)

    done, full_for, refusal = asyncio.run(scenario())
    assert done[0] == "press" and done.count("command") == 5
    assert full_for is not None and 1 <= full_for <= 60
    assert "try again in" in refusal


def test_one_person_holds_at_most_their_share_of_the_watches() -> None:
    async def scenario() -> None:
        watches = Watches(clock=lambda: T0, limit=50, per_user=2)

        def start(user: str) -> object:
            return watches.start(
                "health",
                "staging",
                duration=timedelta(minutes=5),
                interval=timedelta(seconds=30),
                started_by=user,
            )

        first = start("U1")
        start("U1")
        with pytest.raises(WatchRefused, match=r"limits\.watches_per_user"):
            start("U1")
        start("U2")  # someone else still may
        assert watches.started_by(first.id) == "U1"  # type: ignore[attr-defined]
        watches.finished(first)  # type: ignore[arg-type]
        start("U1")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "hostile",
    ["<!channel>", "<!here>", "<!subteam^S123>", "<https://evil.example|click>", "<mailto:a@b>"],
)
def test_fallback_text_pings_nobody_and_links_nowhere(hostile: str) -> None:
    built = message(f"Deployed v1.4.2-{hostile} to staging by <@U0DEPLOY1>", [section("x")])
    assert hostile not in built.text
    assert "&lt;" + hostile[1:] in built.text
    assert "<@U0DEPLOY1>" in built.text  # the bot's own mention stays one
    assert fallback_text("/deploy <env> [<version>] & more") == "/deploy <env> [<version>] & more"


def test_a_burst_of_rate_reads_takes_a_few_queries_and_each_user_gets_their_own_times(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}", clock=lambda: T0)
    queries: list[int] = []
    read_many = store.audit_times_of

    def counted(
        user_ids: Collection[str], command: str, since: datetime
    ) -> dict[str, list[datetime]]:
        queries.append(len(user_ids))
        return read_many(user_ids, command, since)

    store.audit_times_of = counted  # type: ignore[method-assign]
    try:
        for n in range(3):  # U1 ran /health three times, U2 once; /deploy is another count
            store.audit_start(user_id="U1", channel_id="C1", command="/health", text=str(n))
        store.audit_start(user_id="U2", channel_id="C1", command="/health", text="")
        store.audit_start(user_id="U2", channel_id="C1", command="/deploy", text="web 1.0")
        settings = LimitSettings(commands=Rate(count=3, per=timedelta(minutes=1)))
        limits = Limits(settings, store, clock=lambda: T0 + timedelta(seconds=10))
        users = ["U1", "U2", *(f"U{n}" for n in range(3, 51))]

        async def burst() -> list[float | None]:
            return list(await asyncio.gather(*(limits.command_wait(u, "/health") for u in users)))

        waits = asyncio.run(burst())
    finally:
        store.close()
    assert waits[0] == 50.0  # U1's three fill the window: the first leaves in 50 s
    assert waits[1:] == [None] * 49
    assert sum(queries) == 50 and len(queries) < 50, queries  # one read for many at once
