"""Watches without a bot: the tally of readings, stopping, the registry, the sparkline, parsing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import Config
from bot.runbook.health.health import Health, HealthResult
from bot.runbook.health.watch import HealthTally, StopRequest, Watch, Watches, WatchRefused
from bot.slack.health.health_watch import running, summary
from bot.slack.health.watch_blocks import EDITS_PER_MINUTE, edit_spacing_s
from bot.slack.sparkline import GAP, sparkline
from handlers.health import CheckRequest, ReportRequest, ResourcesRequest, WatchRequest, parse
from tests.support.slack_fake import block_kit_errors

T0 = datetime(2025, 10, 17, 9, 0, 0, tzinfo=UTC)


def result(health: Health, latency: float | None, second: int) -> HealthResult:
    reasons = () if health is Health.HEALTHY else (f"{health.value.lower()} because",)
    return HealthResult(
        environment="staging",
        health=health,
        checked_at=T0 + timedelta(seconds=second),
        latency_ms=latency,
        reasons=reasons,
    )


H, D, U = Health.HEALTHY, Health.DEGRADED, Health.UNHEALTHY


def test_the_tally_counts_classes_failures_latency_and_changes() -> None:
    tally = HealthTally()
    readings = [(H, 20), (H, 40), (D, 700), (U, None), (U, None), (H, 30), (U, None)]
    for second, (health, latency) in enumerate(readings):
        tally.add(result(health, latency, second))
    assert tally.consecutive_failures == 1
    total = tally.summary()
    assert total.readings == 7
    assert total.counts == {H: 3, D: 1, U: 3}
    assert total.failures == 3
    assert total.longest_failure_run == 2
    assert total.latency is not None
    # Only answered readings count: 20, 30, 40, 700 -> median of the middle two.
    assert (total.latency.minimum, total.latency.median, total.latency.maximum) == (20, 35, 700)
    assert [(c.before, c.after, c.at.second) for c in total.changes] == [
        (H, D, 2),
        (D, U, 3),
        (U, H, 5),
        (H, U, 6),
    ]


def test_a_watch_with_no_answer_at_all() -> None:
    tally = HealthTally()
    tally.add(result(U, None, 0))
    total = tally.summary()
    assert total.latency is None
    assert total.failures == 1 and total.changes == ()


def new_watch(watches: Watches, duration: timedelta = timedelta(hours=1)) -> Watch:
    return watches.start(
        "health", "staging", duration=duration, interval=timedelta(hours=1), started_by="U1"
    )


def test_stop_interrupts_a_reading_in_flight_and_the_wait() -> None:
    async def scenario() -> tuple[int, int]:
        watches = Watches(clock=lambda: T0)
        watch = new_watch(watches)
        never = asyncio.get_running_loop().create_future()
        taken: list[int] = []

        async def first_then_hang() -> int:
            if not taken:
                return 1
            return await never  # a reading that never answers

        async def consume() -> None:
            async for value in watch.readings(first_then_hang):
                taken.append(value)

        task = asyncio.create_task(consume())
        while not taken:  # the first reading comes at once; then the watch waits an hour
            await asyncio.sleep(0)
        assert watches.stop(watch.id, "U0STOP") is watch
        await asyncio.wait_for(task, timeout=5)
        # Stopped again (a second click): the first stop is the one reported.
        watch.stop(StopRequest(at=T0 + timedelta(minutes=5), by="U0LATE"))
        assert watch.stop_request == StopRequest(at=T0, by="U0STOP")
        return len(taken), len(watches)

    assert asyncio.run(scenario()) == (1, 1)  # finished() is the job's, not the loop's


def test_the_registry_refuses_past_its_limit_and_after_shutdown() -> None:
    async def scenario() -> None:
        watches = Watches(clock=lambda: T0, limit=2)
        first = new_watch(watches)
        new_watch(watches)
        with pytest.raises(WatchRefused, match="2 watches are running"):
            new_watch(watches)
        watches.finished(first)
        third = new_watch(watches)
        assert watches.stop("no-such-id", "U1") is None
        watches.stop_all()
        assert third.stop_request == StopRequest(at=T0, by=None)
        with pytest.raises(WatchRefused, match="shutting down"):
            new_watch(watches)

    asyncio.run(scenario())


def test_expected_readings() -> None:
    async def scenario() -> list[int]:
        watches = Watches(clock=lambda: T0)
        counts = []
        for duration, interval in ((10, 1), (10, 3), (5, 30), (60, 30)):
            watch = watches.start(
                "health",
                "staging",
                duration=timedelta(seconds=duration),
                interval=timedelta(seconds=interval),
                started_by="U1",
            )
            counts.append(watch.expected_readings)
        return counts

    # However short, at least three readings: every min(interval, duration / 3).
    assert asyncio.run(scenario()) == [10, 4, 3, 3]


@pytest.mark.parametrize("seconds", [0.6, 10, 20, 3600, 1 / 3])
def test_a_third_of_the_duration_gives_exactly_three_readings(seconds: float) -> None:
    watch = Watches(clock=lambda: T0).start(
        "health",
        "staging",
        duration=timedelta(seconds=seconds),
        interval=timedelta(hours=1),
        started_by="U1",
    )
    assert watch.expected_readings == 3


def test_a_watch_shorter_than_its_interval_takes_three_readings_and_runs_its_full_time() -> None:
    async def scenario() -> tuple[int, float]:
        watch = Watches(clock=lambda: T0).start(
            "health",
            "staging",
            duration=timedelta(seconds=0.6),
            interval=timedelta(seconds=30),
            started_by="U1",
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        taken = [value async for value in watch.readings(lambda: asyncio.sleep(0, result=1))]
        return len(taken), loop.time() - started

    readings, lasted = asyncio.run(scenario())
    assert readings == 3
    assert lasted >= 0.59  # not over after the third reading: it lasts its whole duration


def test_watch_messages_fit_block_kit_and_say_how_it_ended() -> None:
    async def scenario() -> None:
        watches = Watches(clock=lambda: T0)
        watch = new_watch(watches, timedelta(seconds=10))
        tally = HealthTally()
        for second in range(200):  # flapping: more changes than the summary lists
            tally.add(result(H if second % 2 else U, 20.0 if second % 2 else None, second))
        message = running(watch, tally, 500)
        assert block_kit_errors(message.blocks) == []
        assert any(b.get("type") == "actions" for b in message.blocks)
        assert "Healthy, 20 ms, 0 consecutive failures" in message.text
        watches.stop(watch.id, "U0STOP")
        final = summary(watch, tally)
        assert block_kit_errors(final.blocks) == []
        assert not any(b.get("type") == "actions" for b in final.blocks)
        assert "stopped by <@U0STOP> at 09:00:00 UTC" in final.text
        assert "200 readings (100 Healthy, 0 Degraded, 100 Unhealthy)" in final.text
        assert "199 changes" in final.text
        shown = str(final.blocks)
        assert "… and 179 more" in shown

    asyncio.run(scenario())


def test_sparkline() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([10, None, 30]) == f"▁{GAP}█"
    assert sparkline([5, 5, 5]) == "▁▁▁"
    assert sparkline([None, None]) == GAP * 2
    assert sparkline([]) == ""
    assert sparkline([1, 2, 3, 100], width=3) == "▁▁█"
    # Fixed bounds compare lines with each other; values outside are clamped.
    assert sparkline([0, 50, 200], low=0, high=100) == "▁▅█"


CONFIG = Config.model_validate(
    {
        "environments": {
            "staging": {"base_url": "http://127.0.0.1:1", "transport": "local"},
            # 'watch' may name an environment: it is only a subcommand in second place.
            "watch": {"base_url": "http://127.0.0.1:2", "transport": "local"},
        }
    }
)


def names(request: object) -> object:
    if isinstance(request, CheckRequest):
        return ("check", [e.name for e in request.targets])
    if isinstance(request, WatchRequest):
        return ("watch", request.env.name, request.duration)
    if isinstance(request, ReportRequest):
        return ("report", request.builds)
    if isinstance(request, ResourcesRequest):
        return ("resources", request.env.name, request.duration)
    return request


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("check", ["staging", "watch"])),
        ("all", ("check", ["staging", "watch"])),
        ("staging", ("check", ["staging"])),
        ("STAGING", ("check", ["staging"])),
        ("watch", ("check", ["watch"])),
        ("report", ("report", 10)),
        ("report 20", ("report", 20)),
        ("report 1000", ("report", 1000)),
        ("staging watch", ("watch", "staging", timedelta(minutes=5))),
        ("staging watch 10s", ("watch", "staging", timedelta(seconds=10))),
        ("staging WATCH 1H", ("watch", "staging", timedelta(hours=1))),
        ("watch watch 30s", ("watch", "watch", timedelta(seconds=30))),
        ("staging resources", ("resources", "staging", None)),
        ("staging resources 1m", ("resources", "staging", timedelta(minutes=1))),
        ("watch resources", ("resources", "watch", None)),
    ],
)
def test_parse_accepts(text: str, expected: object) -> None:
    assert names(parse(text.split(), CONFIG)) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("report 0", "not a number of builds"),
        ("report 1001", "not a number of builds"),
        ("report -3", "not a number of builds"),
        ("report ten", "not a number of builds"),
        ("report 10 20", "takes one number"),
        ("staging watch 2h", "at most 1h"),
        ("staging watch 0s", "longer than zero"),
        ("staging watch 10", "not a duration"),
        ("staging watch soon", "not a duration"),
        ("staging watch 10s more", "does not understand"),
        ("all watch", "one environment"),
        ("nosuch watch", "Unknown environment"),
        ("nosuch", "Unknown environment"),
        ("staging report", "does not understand"),
        ("staging; rm -rf /", "does not understand"),
        ("staging staging", "does not understand"),
        ("staging resources 61m", "at most 1h"),
        ("staging resources 0s", "longer than zero"),
        ("all resources", "one environment"),
        ("staging resources 1m now", "does not understand"),
        ("resources staging", "does not understand"),
    ],
)
def test_parse_refuses(text: str, problem: str) -> None:
    answer = parse(text.split(), CONFIG)
    assert isinstance(answer, str)
    assert problem in answer


def test_an_environment_may_not_be_called_report() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Config.model_validate(
            {"environments": {"report": {"base_url": "http://h", "transport": "local"}}}
        )


def test_watches_share_slacks_edit_budget() -> None:
    assert edit_spacing_s(1) == 1.5  # one watch: every reading, unless they come faster
    assert edit_spacing_s(20) == 30.0  # twenty: 40 edits a minute between them
    assert edit_spacing_s(50) * EDITS_PER_MINUTE / 60 == 50
