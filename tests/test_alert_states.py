"""The alert state machine, reading by reading, on a clock moved by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from bot.config import Threshold
from bot.runbook.alerts.states import (
    SPARK_READINGS,
    AlertChange,
    AlertState,
    Metric,
    Policy,
    Reading,
    Transition,
    observed_level,
    step,
)
from bot.runbook.levels import Level
from tests.support.clock import ManualClock

HEALTH = Threshold(warning=500, critical=2000)
N, W, C = Level.NORMAL, Level.WARNING, Level.CRITICAL


class Walk:
    """One metric's state, fed readings every `every` on a manual clock."""

    def __init__(
        self,
        policy: Policy | None = None,
        metric: Metric = Metric.HEALTH,
        threshold: Threshold = HEALTH,
        every: timedelta = timedelta(seconds=15),
    ) -> None:
        self.policy = policy or Policy()
        self.threshold = threshold
        self.clock = ManualClock()
        self.every = every
        self.state = AlertState("staging", metric)
        self.transitions: list[Transition] = []

    def read(self, *values: float | None, problem: str | None = None) -> list[Transition]:
        """Feed readings (None: a failed check with `problem`); the transitions they made."""
        made = []
        for value in values:
            self.clock.advance(seconds=self.every.total_seconds())
            reading = Reading(value, problem if value is None else None)
            self.state, transition = step(
                self.state, reading, self.clock(), self.policy, self.threshold
            )
            if transition is not None:
                made.append(transition)
        self.transitions += made
        return made

    def changes(self) -> list[AlertChange]:
        return [t.change for t in self.transitions]


def levels(transitions: Sequence[Transition]) -> list[tuple[Level, Level]]:
    return [(t.before, t.after) for t in transitions]


# --- firing and resolving -----------------------------------------------------------------


def test_a_warning_fires_after_two_breaching_checks_not_one() -> None:
    walk = Walk()
    assert walk.read(3, 3, 700) == []
    assert walk.state.level == N
    (fired,) = walk.read(710)
    assert fired == Transition(AlertChange.FIRED, N, W)
    assert walk.state.level == W and walk.state.since == walk.clock()


@pytest.mark.parametrize(("breaches", "passes"), [(1, 1), (2, 2), (3, 2), (2, 4), (5, 1)])
def test_the_counts_come_from_the_policy(breaches: int, passes: int) -> None:
    walk = Walk(Policy(breaches_to_fire=breaches, passes_to_resolve=passes))
    assert walk.read(*[700] * (breaches - 1)) == []
    assert walk.changes() == []
    walk.read(700)
    assert walk.changes() == [AlertChange.FIRED]
    walk.read(*[5] * (passes - 1))
    assert walk.changes() == [AlertChange.FIRED]
    walk.read(5)
    assert walk.changes() == [AlertChange.FIRED, AlertChange.RESOLVED]


def test_warning_and_critical_are_one_alert_whose_severity_moves() -> None:
    # Checks 5 minutes apart: four changes within 15 minutes would be flapping.
    walk = Walk(every=timedelta(minutes=5))
    walk.read(700, 700)
    walk.read(2500)
    assert walk.state.level == W  # one critical reading is not two
    walk.read(2600)
    walk.read(900, 800)
    walk.read(3, 3)
    assert levels(walk.transitions) == [(N, W), (W, C), (C, W), (W, N)]
    assert walk.changes() == [
        AlertChange.FIRED,
        AlertChange.RAISED,
        AlertChange.LOWERED,
        AlertChange.RESOLVED,
    ]


def test_from_normal_two_critical_readings_fire_critical_a_warning_and_a_critical_warning() -> None:
    walk = Walk()
    (fired,) = walk.read(2500, 2500)
    assert fired == Transition(AlertChange.FIRED, N, C)
    other = Walk()
    (fired,) = other.read(700, 2500)
    assert fired == Transition(AlertChange.FIRED, N, W)


def test_resolving_goes_to_the_highest_of_the_passing_readings() -> None:
    walk = Walk()
    walk.read(2500, 2500)
    (lowered,) = walk.read(700, 3)
    assert lowered == Transition(AlertChange.LOWERED, C, W)


def test_one_pass_in_the_middle_of_breaches_keeps_the_alert_open() -> None:
    walk = Walk()
    walk.read(700, 700)
    assert walk.read(3, 700, 3, 700, 3, 700) == []
    assert walk.state.level == W


def test_a_metric_alternating_breach_and_pass_never_fires() -> None:
    walk = Walk()
    for _ in range(50):
        walk.read(700, 3)
    assert walk.transitions == [] and walk.state.level == N
    for _ in range(50):
        walk.read(2500, 3)
    assert walk.transitions == [] and walk.state.level == N


# --- hysteresis ---------------------------------------------------------------------------


def test_the_levels_of_a_value_seen_from_each_level() -> None:
    margin = 0.05
    # From Normal: the table as it is.
    assert observed_level(499, HEALTH, N, margin) == N
    assert observed_level(500, HEALTH, N, margin) == W
    assert observed_level(2000, HEALTH, N, margin) == W
    assert observed_level(2001, HEALTH, N, margin) == C
    # From Warning: still Warning down to 475 (500 less 5 %).
    assert observed_level(480, HEALTH, W, margin) == W
    assert observed_level(475, HEALTH, W, margin) == W
    assert observed_level(474, HEALTH, W, margin) == N
    # From Critical: still Critical down to 1,900 (2,000 less 5 %), then Warning, then Normal.
    assert observed_level(1901, HEALTH, C, margin) == C
    assert observed_level(1900, HEALTH, C, margin) == W
    assert observed_level(480, HEALTH, C, margin) == W
    assert observed_level(400, HEALTH, C, margin) == N
    # No margin: the table both ways.
    assert observed_level(499, HEALTH, W, 0) == N


def test_a_value_hovering_at_the_threshold_does_not_toggle() -> None:
    walk = Walk()
    walk.read(510, 520)
    assert walk.changes() == [AlertChange.FIRED]
    for _ in range(20):
        walk.read(495, 505, 480, 499, 476)
    assert walk.changes() == [AlertChange.FIRED]
    walk.read(470, 460)
    assert walk.changes() == [AlertChange.FIRED, AlertChange.RESOLVED]


def test_without_hysteresis_the_same_hovering_would_toggle() -> None:
    walk = Walk(Policy(margin=0.0, flapping_changes=1000))
    walk.read(510, 520)
    for _ in range(3):
        walk.read(495, 490, 505, 510)
    assert walk.changes().count(AlertChange.RESOLVED) == 3


def test_critical_hovers_at_its_own_line_too() -> None:
    walk = Walk()
    walk.read(2100, 2100)
    assert walk.state.level == C
    walk.read(1950, 2010, 1920, 1990)
    assert walk.state.level == C
    walk.read(1800, 1700)
    assert walk.state.level == W


# --- failed checks ------------------------------------------------------------------------


def test_a_failed_health_check_is_critical() -> None:
    walk = Walk()
    (fired,) = walk.read(None, None, problem="connection refused")
    assert fired == Transition(AlertChange.FIRED, N, C)
    assert walk.state.problem == "connection refused"
    assert walk.state.readings[-2:] == (None, None)


def test_a_figure_that_cannot_be_read_is_a_warning() -> None:
    walk = Walk(metric=Metric.MEMORY, threshold=Threshold(warning=70, critical=85))
    (fired,) = walk.read(None, None, problem="deploy@prod-1: connection refused")
    assert fired == Transition(AlertChange.FIRED, N, W)


def test_a_reading_with_a_value_and_a_problem_takes_the_worse() -> None:
    memory = Threshold(warning=70, critical=85)
    state = AlertState("prod", Metric.MEMORY)
    policy = Policy(breaches_to_fire=1)
    clock = ManualClock()
    state, transition = step(state, Reading(95, "prod-2: refused"), clock(), policy, memory)
    assert transition == Transition(AlertChange.FIRED, N, C)
    state, transition = step(
        AlertState("prod", Metric.MEMORY), Reading(20, "prod-2: refused"), clock(), policy, memory
    )
    assert transition == Transition(AlertChange.FIRED, N, W)


# --- flapping -----------------------------------------------------------------------------


def test_four_changes_within_fifteen_minutes_is_flapping_then_quiet_then_settled() -> None:
    walk = Walk(Policy(breaches_to_fire=1, passes_to_resolve=1), every=timedelta(minutes=1))
    assert [t.change for t in walk.read(700, 3, 700)] == [
        AlertChange.FIRED,
        AlertChange.RESOLVED,
        AlertChange.FIRED,
    ]
    (flapping,) = walk.read(3)
    assert flapping == Transition(AlertChange.FLAPPING, W, N)
    assert walk.state.flapping
    # Further changes are recorded, not announced.
    quiet = walk.read(700, 3, 700)
    assert [t.change for t in quiet] == [AlertChange.QUIET] * 3
    assert walk.state.level == W
    # 14 minutes without a change: still flapping; the 15th settles it where it ended.
    assert walk.read(*[710] * 14) == []
    assert walk.state.flapping
    (settled,) = walk.read(720)
    assert settled == Transition(AlertChange.SETTLED, W, W)
    assert not walk.state.flapping
    # Back to normal afterwards is an ordinary resolution.
    (resolved,) = walk.read(3)
    assert resolved.change == AlertChange.RESOLVED


def test_flapping_that_ends_normal_settles_at_normal() -> None:
    walk = Walk(Policy(breaches_to_fire=1, passes_to_resolve=1), every=timedelta(minutes=2))
    walk.read(700, 3, 700, 3)
    assert walk.changes()[-1] == AlertChange.FLAPPING
    walk.read(*[3] * 7)
    assert walk.state.flapping  # 14 minutes
    (settled,) = walk.read(3)
    assert settled == Transition(AlertChange.SETTLED, N, N)


def test_changes_spread_over_more_than_the_window_are_not_flapping() -> None:
    walk = Walk(Policy(breaches_to_fire=1, passes_to_resolve=1), every=timedelta(minutes=5))
    walk.read(700, 3, 700, 3, 700, 3, 700, 3)
    assert AlertChange.FLAPPING not in walk.changes()
    assert walk.changes() == [AlertChange.FIRED, AlertChange.RESOLVED] * 4


def test_a_change_that_settles_and_moves_at_once_settles_at_the_new_level() -> None:
    walk = Walk(Policy(breaches_to_fire=1, passes_to_resolve=1), every=timedelta(minutes=1))
    walk.read(700, 3, 700, 3)
    assert walk.state.flapping and walk.state.level == N
    walk.clock.advance(minutes=20)
    (settled,) = walk.read(2500)
    assert settled == Transition(AlertChange.SETTLED, N, C)
    assert not walk.state.flapping and walk.state.level == C


def test_the_flapping_count_and_window_come_from_the_policy() -> None:
    policy = Policy(
        breaches_to_fire=1,
        passes_to_resolve=1,
        flapping_changes=2,
        flapping_window=timedelta(minutes=3),
    )
    walk = Walk(policy, every=timedelta(minutes=1))
    assert [t.change for t in walk.read(700, 3)] == [AlertChange.FIRED, AlertChange.FLAPPING]
    walk.read(3, 3)
    assert walk.state.flapping
    (settled,) = walk.read(3)
    assert settled.change == AlertChange.SETTLED


# --- samples and history ------------------------------------------------------------------


def test_a_sample_already_counted_does_not_count_again() -> None:
    build = Threshold(warning=30, critical=40)
    state = AlertState("ci", Metric.BUILD_TIME)
    clock = ManualClock()
    policy = Policy()
    for _ in range(5):
        state, transition = step(state, Reading(45.0, sample="1042"), clock(), policy, build)
    assert transition is None and state.recent == (C,) and state.level == N
    state, transition = step(state, Reading(44.0, sample="1043"), clock(), policy, build)
    assert transition == Transition(AlertChange.FIRED, N, C)
    assert state.sample == "1043"


def test_the_state_keeps_the_latest_readings_for_the_sparkline() -> None:
    walk = Walk()
    walk.read(*range(100))
    assert walk.state.readings == tuple(float(v) for v in range(100 - SPARK_READINGS, 100))
    assert walk.state.value == 99
    assert len(walk.state.recent) == 2
