"""Periodic work on shared beats: jobs whose periods divide one another wake the loop together."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.clock import next_beat
from bot.scheduler import _OnTheBeat

T0 = 1_800_000_000.0  # a multiple of 2.5, 5 and 15 s


@pytest.mark.parametrize(
    ("every_s", "after_s", "beat"),
    [
        (15.0, T0, T0 + 15),  # on a beat: exactly one period later
        (15.0, T0 + 0.1, T0 + 15),  # off the beat, early: the next beat (14.9 s on)
        (15.0, T0 + 7.6, T0 + 30),  # off the beat, late: not 7.4 s on, the one after
        (2.5, T0 + 15, T0 + 17.5),
    ],
)
def test_the_next_beat_is_a_multiple_of_the_period_at_least_half_a_period_on(
    every_s: float, after_s: float, beat: float
) -> None:
    assert next_beat(every_s, after_s) == beat


def test_periods_that_divide_one_another_share_their_beats() -> None:
    def beats(every_s: float, start_s: float, until_s: float) -> set[float]:
        found, at = set(), start_s
        while at < until_s:
            at = next_beat(every_s, at)
            found.add(at)
        return found

    checks = beats(15.0, T0 + 3.3, T0 + 120)
    store_watch = beats(5.0, T0 + 1.1, T0 + 120)
    lease = beats(2.5, T0 + 0.4, T0 + 120)
    assert checks <= store_watch <= lease  # every check falls on a watch, every watch on a lease


def test_a_period_that_is_not_a_whole_number_still_moves_on() -> None:
    at = T0
    for _ in range(100):
        later = next_beat(5 / 6, at)  # the checking lease's beat at 5 s check intervals
        assert 5 / 12 <= later - at < 5 / 6 * 1.5 + 1e-6
        at = later


def test_the_periodic_jobs_trigger_keeps_the_beats() -> None:
    trigger = _OnTheBeat(seconds=5, timezone=UTC)
    first = datetime.fromtimestamp(T0 + 1.234, UTC)  # the first run, at once: off the beat

    second = trigger.get_next_fire_time(first, first)
    third = trigger.get_next_fire_time(second, second)

    assert second == datetime.fromtimestamp(T0 + 5, UTC)
    assert third == datetime.fromtimestamp(T0 + 10, UTC)
