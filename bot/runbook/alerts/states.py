"""The alert state machine, pure: readings in, levels and transitions out.

The runbook's Key Metrics (`METRICS`), a reading's level by the config's thresholds, and how
one (environment, metric) state moves (`step`): up when each of the last `breaches_to_fire`
readings is above the level, down when each of the last `passes_to_resolve` is below it (with
hysteresis), and flapping. Alertmanager's pending → firing → resolved, with `for` counted in
readings. bot/runbook/alerts/alerts.py keeps the states in the store and acts on the
transitions; the words for a change are here too, for every place that shows one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from bot.config import AlertSettings, Threshold, Thresholds
from bot.runbook.levels import Level, level_of, worst_level

SPARK_READINGS = 20  # readings kept for the message's sparkline


class Metric(StrEnum):
    HEALTH = "health"
    API = "api"
    ERROR_RATE = "error_rate"
    MEMORY = "memory"
    CPU = "cpu"
    BUILD_TIME = "build_time"

    @property
    def info(self) -> MetricInfo:
        return METRICS[self]

    def threshold(self, thresholds: Thresholds) -> Threshold:
        threshold: Threshold = getattr(thresholds, self.info.threshold_key)
        return threshold


@dataclass(frozen=True)
class MetricInfo:
    title: str  # the runbook's name for it
    unit: str
    threshold_key: str  # its row of the config's thresholds
    failure_level: Level  # a reading that could not be made


METRICS = {
    Metric.HEALTH: MetricInfo("Health check response", "ms", "health_response_ms", Level.CRITICAL),
    Metric.API: MetricInfo("API response time", "ms", "api_response_ms", Level.CRITICAL),
    Metric.ERROR_RATE: MetricInfo("Error rate", "%", "error_rate_percent", Level.WARNING),
    Metric.MEMORY: MetricInfo("Memory usage", "%", "memory_percent", Level.WARNING),
    Metric.CPU: MetricInfo("CPU usage", "%", "cpu_percent", Level.WARNING),
    Metric.BUILD_TIME: MetricInfo("Build time", "min", "build_minutes", Level.WARNING),
}


class Status(StrEnum):
    FIRING = "firing"
    FLAPPING = "flapping"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Reading:
    """One check of one metric: its value, or the problem that kept it from being read.

    A reading may have both (the worst host's figure, another host unreadable). `sample`
    names what was measured when the same thing can be read twice (a build's id): a sample
    already counted is not counted again.
    """

    value: float | None = None
    problem: str | None = None
    detail: str | None = None
    sample: str | None = None


@dataclass(frozen=True)
class Observation:
    environment: str
    metric: Metric
    reading: Reading


@dataclass(frozen=True)
class Policy:
    breaches_to_fire: int = 2
    passes_to_resolve: int = 2
    margin: float = 0.05  # share of a threshold a value must clear to leave that level
    flapping_changes: int = 4
    flapping_window: timedelta = timedelta(minutes=15)

    @classmethod
    def from_config(cls, alerts: AlertSettings) -> Policy:
        return cls(
            breaches_to_fire=alerts.breaches_to_fire,
            passes_to_resolve=alerts.passes_to_resolve,
            margin=alerts.hysteresis_percent / 100,
            flapping_changes=alerts.flapping_changes,
            flapping_window=alerts.flapping_window,
        )


@dataclass(frozen=True)
class AlertState:
    environment: str
    metric: Metric
    level: Level = Level.NORMAL  # the level announced (the alert's, while one is open)
    recent: tuple[Level, ...] = ()  # levels of the latest readings, oldest first
    readings: tuple[float | None, ...] = ()  # latest values, for the sparkline
    changes: tuple[datetime, ...] = ()  # changes of level within the flapping window
    flapping: bool = False
    since: datetime | None = None  # when the level was entered
    value: float | None = None  # the latest reading
    problem: str | None = None
    detail: str | None = None
    sample: str | None = None
    checked_at: datetime | None = None
    alert_id: int | None = None  # the latest alert raised for it
    version: int = 0  # its row's version in the store (0: not saved yet)

    @property
    def key(self) -> tuple[str, str]:
        return (self.environment, self.metric.value)


class AlertChange(StrEnum):
    FIRED = "fired"  # Normal -> Warning or Critical: a new alert
    RAISED = "raised"  # Warning -> Critical
    LOWERED = "lowered"  # Critical -> Warning
    RESOLVED = "resolved"  # back to Normal
    FLAPPING = "flapping"  # a change that made it flapping
    QUIET = "quiet"  # a change while flapping: recorded, not announced
    SETTLED = "settled"  # no change for the flapping window: announced at its final level


@dataclass(frozen=True)
class Transition:
    change: AlertChange
    before: Level
    after: Level


# --- the state machine (pure) -------------------------------------------------------------------


def observed_level(value: float, threshold: Threshold, current: Level, margin: float) -> Level:
    """The level of a value, seen from the current one: below a level only past its margin."""
    raw = level_of(value, threshold)
    if raw.rank >= current.rank:
        return raw
    if current == Level.CRITICAL and value > threshold.critical * (1 - margin):
        return Level.CRITICAL
    if value >= threshold.warning * (1 - margin):
        return worst_level(raw, Level.WARNING)
    return raw


def reading_level(
    reading: Reading, threshold: Threshold, current: Level, margin: float, failure: Level
) -> Level:
    levels = []
    if reading.value is not None:
        levels.append(observed_level(reading.value, threshold, current, margin))
    if reading.problem is not None:
        levels.append(failure)
    return worst_level(*levels)


def step(
    state: AlertState, reading: Reading, now: datetime, policy: Policy, threshold: Threshold
) -> tuple[AlertState, Transition | None]:
    """The state after one reading, and the change it made (None: nothing to announce or
    record). A reading of a sample already counted changes nothing."""
    if reading.sample is not None and reading.sample == state.sample:
        return state, None
    failure = state.metric.info.failure_level
    seen = reading_level(reading, threshold, state.level, policy.margin, failure)
    depth = max(policy.breaches_to_fire, policy.passes_to_resolve)
    recent = (*state.recent, seen)[-depth:]
    before = state.level
    after = before
    breaches = recent[-policy.breaches_to_fire :]
    if len(breaches) == policy.breaches_to_fire and all(lv.rank > before.rank for lv in breaches):
        after = min(breaches, key=lambda level: level.rank)  # the level all of them reached
    passes = recent[-policy.passes_to_resolve :]
    if len(passes) == policy.passes_to_resolve and all(lv.rank < before.rank for lv in passes):
        after = worst_level(*passes)  # the level none of them exceeded

    window_start = now - policy.flapping_window
    changes = tuple(moment for moment in state.changes if moment > window_start)
    settling = state.flapping and (not state.changes or state.changes[-1] <= window_start)
    flapping = state.flapping and not settling
    since = state.since
    transition: Transition | None = None
    if after != before:
        changes = (*changes, now)
        since = now
        if flapping:
            transition = Transition(AlertChange.QUIET, before, after)
        elif not settling and len(changes) >= policy.flapping_changes:
            flapping = True
            transition = Transition(AlertChange.FLAPPING, before, after)
        elif not settling:
            transition = Transition(_change(before, after), before, after)
    if settling:
        # Quiet for the whole window: the alert is brought to where the level ended.
        transition = Transition(AlertChange.SETTLED, before, after)
    new = replace(
        state,
        level=after,
        recent=recent,
        readings=(*state.readings, reading.value)[-SPARK_READINGS:],
        changes=changes,
        flapping=flapping,
        since=since,
        value=reading.value,
        problem=reading.problem,
        detail=reading.detail,
        sample=reading.sample if reading.sample is not None else state.sample,
        checked_at=now,
    )
    return new, transition


def _change(before: Level, after: Level) -> AlertChange:
    if before == Level.NORMAL:
        return AlertChange.FIRED
    if after == Level.NORMAL:
        return AlertChange.RESOLVED
    return AlertChange.RAISED if after.rank > before.rank else AlertChange.LOWERED


# --- describing a value -------------------------------------------------------------------------


def value_text(metric: Metric, value: float | None) -> str:
    """712 ms, 3.1 %, 41.8 min."""
    if value is None:
        return "no reading"
    unit = metric.info.unit
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "%":
        return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"
    return f"{value:.1f} {unit}"


def reading_text(metric: Metric, value: float | None, problem: str | None) -> str:
    """What the latest reading said, in a few words."""
    if problem is not None and value is None:
        return problem
    shown = value_text(metric, value)
    return f"{shown} ({problem})" if problem else shown


def threshold_text(metric: Metric, threshold: Threshold) -> str:
    """warning at 500 ms, critical over 2,000 ms (the runbook's table, as level_of reads it)."""
    return (
        f"warning at {value_text(metric, threshold.warning)}, "
        f"critical over {value_text(metric, threshold.critical)}"
    )


def change_text(metric: Metric, transition: Transition, state: AlertState, policy: Policy) -> str:
    """The thread line for a change."""
    now = reading_text(metric, state.value, state.problem)
    change = transition.change
    if change in (AlertChange.RAISED, AlertChange.LOWERED):
        return f"{transition.before} → {transition.after}: {now}"
    if change == AlertChange.RESOLVED:
        return f"Back to Normal: {now}"
    if change == AlertChange.FLAPPING:
        minutes = round(policy.flapping_window.total_seconds() / 60)
        return (
            f"Flapping: {len(state.changes)} changes of level within {minutes} min (now "
            f"{transition.after}: {now}). Nothing more is posted about it until it has been "
            f"quiet for {minutes} min."
        )
    if change == AlertChange.SETTLED:
        return f"Quiet again: settled at {transition.after} ({now})"
    return f"{transition.after}: {now}"
