"""Threshold alerts: one state per (environment, metric), moved by readings, kept in the store.

The runbook's Key Metrics table, watched by the scheduled checks (bot/runbook/monitor.py). Each
reading is Normal, Warning or Critical by the config's thresholds; a check that could not be
made is a reading too, with its problem (a failed health check is Critical, as the runbook
says; a figure that cannot be read — metrics, a host's /proc — is a Warning: the gap shows
without waking anyone).

How a state moves (`step`, a pure function; README "Alerts"):

- The level announced moves up only when each of the last `breaches_to_fire` readings is
  above it, to the lowest of them (two Critical readings make Critical, a Warning and a
  Critical make Warning); down only when each of the last `passes_to_resolve` readings is
  below it, to the highest of them. So Warning and Critical of one metric are one alert
  whose severity moves, and a reading alternating breach/pass moves nothing.
- Hysteresis: a reading counts as below a level only once it is below that level's threshold
  minus `hysteresis_percent` of it: a value hovering at the line does not toggle.
- Flapping: `flapping_changes` changes of level within `flapping_window` mark the state
  flapping. One message says so; later changes are recorded silently, and once the window
  passes without a change it settles: the alert is brought to the level it ended at.

What a change does to alerts (`Alerts.observe`): Normal → Warning/Critical opens a new alert
(a new alert after a resolution is a new alert, with its own message); a move between Warning
and Critical or back to Normal changes that alert and adds a line for its thread. Each change
is written with the states in one transaction, together with a durable `alert.sync` timer
whose handler brings Slack up to date (bot/slack/alerting.py): a restart loses nothing and
posts nothing twice. A Critical alert sets an `alert.remind` timer every `repeat_every`.
Silences and acknowledgements are rows too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from bot.clock import Clock, utc_now
from bot.config import AlertSettings, Config, Threshold, Thresholds
from bot.runbook.alerts.silences import extension, holds, needs_approver
from bot.runbook.levels import Level, level_of, worst_level
from bot.store import (
    Alert,
    AlertSilence,
    AlertStateRow,
    AlertWrite,
    Fence,
    LeaseLost,
    NewAlertEvent,
    NewTimer,
    Store,
)

log = logging.getLogger(__name__)

SYNC_TIMER = "alert.sync"
REMIND_TIMER = "alert.remind"
UNSILENCE_TIMER = "alert.unsilence"
SPARK_READINGS = 20  # readings kept for the message's sparkline
CI = "ci"  # the build-time alert's scope: the CI's builds, not an environment

Wake = Callable[[datetime], None]


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


# --- alerts over the store ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pressed:
    """What a button press did: the alert as it is now (None: no such alert), whether the
    press changed anything, and a sentence for the presser."""

    alert: Alert | None
    changed: bool
    note: str
    silence: AlertSilence | None = None
    by: str | None = None  # who had already done it (a user id; the chat layer names them)
    denied: bool = False  # refused (silences.py: a Critical alert of production, by a non-approver)
    capped: bool = False  # a silence shorter than silence_for: silence_max reached


@dataclass
class _Cycle:
    """The writes of one observe call, gathered before one transaction."""

    states: dict[tuple[str, str], AlertState] = field(default_factory=dict)
    writes: list[AlertWrite] = field(default_factory=list)
    transitions: list[tuple[AlertState, Transition]] = field(default_factory=list)


class Alerts:
    """The alert states, cached in memory (the scheduled checks are their only writer) and
    saved after each batch of readings; alerts, silences and acknowledgements in the store.

    With several replicas, the one holding the checking lease writes the states
    (bot/runbook/alerts/checking.py): `take_over` reloads them from the store and fences its
    writes with the lease; after `stand_down` readings are refused. Each state's write names
    the version it read, so a write racing another checker's is refused too, and the cache is
    dropped (read again before the next readings).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Clock = utc_now,
        wake: Wake = lambda due_at: None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.wake = wake
        self.policy = Policy.from_config(config.alerts)
        self._states: dict[tuple[str, str], AlertState] | None = None
        self._writing = asyncio.Lock()
        self._loading = asyncio.Lock()
        # Set by the checking lease: None and `_fenced` means another replica checks.
        self.fence: Fence | None = None
        self._fenced = False

    async def take_over(self, fence: Fence) -> None:
        """This replica checks now, under fence: the states are read afresh from the store."""
        async with self._writing:
            self._states = None
            self.fence, self._fenced = fence, True

    def stand_down(self) -> None:
        """Another replica checks now: readings are refused until `take_over`."""
        self.fence, self._fenced = None, True
        self._states = None

    # --- readings ---------------------------------------------------------------------------

    async def observe(
        self, observations: Iterable[Observation]
    ) -> list[tuple[AlertState, Transition]]:
        """Apply readings in order; returns the changes they made. Raises StoreError, or
        LeaseLost when this replica does not check (then nothing of this batch is kept: the
        next readings start from the saved states)."""
        async with self._writing:
            if self._fenced and self.fence is None:
                raise LeaseLost("this replica does not hold the checking lease")
            states = await self._loaded()
            now = self.clock()
            cycle = _Cycle()
            for observation in observations:
                key = (observation.environment, observation.metric.value)
                state = cycle.states.get(key) or states.get(key)
                if state is None:
                    state = AlertState(observation.environment, observation.metric)
                threshold = observation.metric.threshold(self.config.thresholds)
                new, transition = step(state, observation.reading, now, self.policy, threshold)
                cycle.states[key] = new
                if transition is not None:
                    cycle.transitions.append((new, transition))
                    write = self._write(new, transition, now)
                    if write is not None:
                        cycle.writes.append(write)
            if not cycle.states:
                return []
            try:
                created = await asyncio.to_thread(
                    self.store.save_alert_states,
                    [_row(state) for state in cycle.states.values()],
                    cycle.writes,
                    self.fence,
                )
            except LeaseLost:
                self._states = None  # another checker wrote: read them again next time
                raise
            for key, state in cycle.states.items():
                alert_id = created.get(key, state.alert_id)
                states[key] = replace(state, alert_id=alert_id, version=state.version + 1)
            if cycle.writes:
                self.wake(now)
            return [
                (replace(state, alert_id=created.get(state.key, state.alert_id)), transition)
                for state, transition in cycle.transitions
            ]

    async def state(self, environment: str, metric: Metric) -> AlertState | None:
        return (await self._loaded()).get((environment, metric.value))

    async def _loaded(self) -> dict[tuple[str, str], AlertState]:
        if self._states is not None:
            return self._states
        # Loaded once: a second load finishing after a batch was applied would bring back the
        # states from before it.
        async with self._loading:
            if self._states is not None:
                return self._states
            rows = await asyncio.to_thread(self.store.alert_states)
            states: dict[tuple[str, str], AlertState] = {}
            for row in rows:
                try:
                    state = _state(row)
                except ValueError:
                    log.warning(
                        "alert state %s/%s is unknown to this bot; left alone",
                        row.environment,
                        row.metric,
                    )
                    continue
                states[state.key] = state
            self._states = states
            return states

    def _write(self, state: AlertState, transition: Transition, now: datetime) -> AlertWrite | None:
        """The alert change a transition makes, with its thread line and timers."""
        change = transition.change
        reading = {"value": state.value, "problem": state.problem, "detail": state.detail}
        env, metric = state.environment, state.metric.value

        def sync(alert_id: int) -> list[NewTimer]:
            return [NewTimer(SYNC_TIMER, str(alert_id), now)]

        def reminding(alert_id: int) -> list[NewTimer]:
            return [*sync(alert_id), self._reminder(alert_id, now)]

        def no_reminder(alert_id: int) -> list[tuple[str, str]]:
            return [(REMIND_TIMER, str(alert_id))]

        critical = transition.after == Level.CRITICAL
        if change == AlertChange.FIRED:
            return AlertWrite(
                env,
                metric,
                None,
                {
                    "status": Status.FIRING.value,
                    "level": transition.after.value,
                    "peak_level": transition.after.value,
                    "opened_at": now,
                    "level_since": now,
                    **reading,
                },
                timers=reminding if critical else sync,
            )
        if state.alert_id is None:
            # Only a state whose alert row went missing (a database restored from a backup,
            # say): a level worth announcing is announced as a new alert rather than lost.
            log.warning("%s/%s changed (%s) with no alert on record", env, metric, change)
            if transition.after == Level.NORMAL:
                return None
            return self._write(
                state, Transition(AlertChange.FIRED, Level.NORMAL, transition.after), now
            )
        text = change_text(state.metric, transition, state, self.policy)
        line = NewAlertEvent(change.value, text)
        if change in (AlertChange.RAISED, AlertChange.LOWERED):
            values: dict[str, object] = {"level": transition.after.value, "level_since": now}
            if critical:
                values["peak_level"] = Level.CRITICAL.value
            return AlertWrite(
                env,
                metric,
                state.alert_id,
                {**values, **reading},
                line,
                timers=reminding if critical else sync,
                cancel=(lambda _: ()) if critical else no_reminder,
            )
        if change == AlertChange.RESOLVED:
            return AlertWrite(
                env,
                metric,
                state.alert_id,
                {
                    "status": Status.RESOLVED.value,
                    "level": Level.NORMAL.value,
                    "resolved_at": now,
                    **reading,
                },
                line,
                timers=sync,
                cancel=no_reminder,
            )
        if change == AlertChange.FLAPPING:
            return AlertWrite(
                env,
                metric,
                state.alert_id,
                {
                    "status": Status.FLAPPING.value,
                    "level": transition.after.value,
                    "resolved_at": None,
                    **reading,
                },
                line,
                timers=sync,
                cancel=no_reminder,
            )
        if change == AlertChange.QUIET:
            return AlertWrite(
                env, metric, state.alert_id, {"level": transition.after.value}, bump=False
            )
        # SETTLED: the alert takes the level the metric ended at.
        if transition.after == Level.NORMAL:
            values = {
                "status": Status.RESOLVED.value,
                "level": Level.NORMAL.value,
                "resolved_at": now,
            }
            return AlertWrite(env, metric, state.alert_id, {**values, **reading}, line, timers=sync)
        values = {
            "status": Status.FIRING.value,
            "level": transition.after.value,
            "level_since": now,
            "resolved_at": None,
        }
        if critical:
            values["peak_level"] = Level.CRITICAL.value
        return AlertWrite(
            env,
            metric,
            state.alert_id,
            {**values, **reading},
            line,
            timers=reminding if critical else sync,
        )

    def _reminder(self, alert_id: int, since: datetime) -> NewTimer:
        """The next reminder of a Critical alert; its token is when it became Critical."""
        return NewTimer(
            REMIND_TIMER,
            str(alert_id),
            self.clock() + self.config.alerts.repeat_every,
            {"since": since.isoformat()},
        )

    # --- people -----------------------------------------------------------------------------

    async def get(self, alert_id: int) -> Alert | None:
        return await asyncio.to_thread(self.store.alert, alert_id)

    async def silence_of(self, environment: str, metric: str) -> AlertSilence | None:
        """The silence in force for (environment, metric) now, if any."""
        silence = await asyncio.to_thread(self.store.alert_silence, environment, metric)
        return silence if silence is not None and silence.until > self.clock() else None

    async def holding_silence(self, alert: Alert) -> AlertSilence | None:
        """The silence in force that keeps this alert quiet (silences.py `holds`), if any."""
        silence = await self.silence_of(alert.environment, alert.metric)
        return silence if silence is not None and holds(silence, alert, self.config) else None

    async def acknowledge(self, alert_id: int, user_id: str) -> Pressed:
        """Acknowledge: someone is on it; the Critical reminders stop."""
        for _ in range(_PRESS_TRIES):
            alert = await self.get(alert_id)
            if alert is None:
                return Pressed(None, False, "That alert is not on record.")
            if alert.status == Status.RESOLVED:
                return Pressed(alert, False, "That alert is already resolved.")
            if alert.acked_by is not None:
                return Pressed(alert, False, "Already acknowledged", by=alert.acked_by)
            now = self.clock()
            changed = await asyncio.to_thread(
                self.store.change_alert,
                alert_id,
                alert.version,
                {"acked_by": user_id, "acked_at": now},
                timers=[NewTimer(SYNC_TIMER, str(alert_id), now)],
                cancel=[(REMIND_TIMER, str(alert_id))],
            )
            if changed is not None:
                self.wake(now)
                return Pressed(changed, True, "Acknowledged: no more reminders for this alert.")
        return Pressed(alert, False, "The alert kept changing; press again.")

    async def silence(self, alert_id: int, user_id: str) -> Pressed:
        """Silence the alert's (environment, metric) for alerts.silence_for, extended up to
        alerts.silence_max from its start (silences.py); production's Critical: approvers."""
        alert = await self.get(alert_id)
        if alert is None:
            return Pressed(None, False, "That alert is not on record.")
        if needs_approver(alert, self.config) and not self.config.access.may_approve(user_id):
            return Pressed(
                alert,
                False,
                f"{alert.environment} requires approval: only approvers (access.approvers) may "
                "silence its Critical alerts. Its pages go on; Acknowledge or Escalate instead.",
                denied=True,
            )
        now = self.clock()
        current = await self.silence_of(alert.environment, alert.metric)
        longer = extension(now, current, self.config.alerts)
        if longer is None:
            return Pressed(alert, False, "", current)
        silence = await asyncio.to_thread(
            self.store.silence_alerts,
            alert.environment,
            alert.metric,
            longer.until,
            user_id,
            [
                NewTimer(
                    UNSILENCE_TIMER,
                    silence_key(alert.environment, alert.metric),
                    longer.until,
                    {"until": longer.until.isoformat()},
                )
            ],
            longer.began,
        )
        # The message shows the silence: a change for it to catch up with.
        alert = await self._touch(alert_id) or alert
        return Pressed(alert, True, "", silence, capped=longer.capped)

    async def _touch(
        self, alert_id: int, event: NewAlertEvent | None = None, timers: Sequence[NewTimer] = ()
    ) -> Alert | None:
        """A change to the alert's message with nothing else changed (a silence set or over),
        its thread line and timers, and the sync that shows it."""
        for _ in range(_PRESS_TRIES):
            alert = await self.get(alert_id)
            if alert is None:
                return None
            now = self.clock()
            changed = await asyncio.to_thread(
                self.store.change_alert,
                alert_id,
                alert.version,
                {},
                event,
                [*timers, NewTimer(SYNC_TIMER, str(alert_id), now)],
            )
            if changed is not None:
                self.wake(now)
                return changed
        log.warning("alert %d kept changing; its message catches up with the next change", alert_id)
        return None

    async def link_incident(self, alert_id: int, incident_id: int) -> Alert | None:
        """Record the incident opened for the alert (once: a link already made is kept)."""
        for _ in range(_PRESS_TRIES):
            alert = await self.get(alert_id)
            if alert is None or alert.incident_id is not None:
                return alert
            now = self.clock()
            changed = await asyncio.to_thread(
                self.store.change_alert,
                alert_id,
                alert.version,
                {"incident_id": incident_id},
                timers=[NewTimer(SYNC_TIMER, str(alert_id), now)],
            )
            if changed is not None:
                self.wake(now)
                return changed
        return await self.get(alert_id)

    async def mark_incident_noted(self, alert_id: int) -> None:
        for _ in range(_PRESS_TRIES):
            alert = await self.get(alert_id)
            if alert is None or alert.incident_noted:
                return
            changed = await asyncio.to_thread(
                partial(
                    self.store.change_alert,
                    alert_id,
                    alert.version,
                    {"incident_noted": True},
                    bump=False,
                )
            )
            if changed is not None:
                return

    # --- timers -----------------------------------------------------------------------------

    async def remind(self, alert_id: int, since: str) -> bool:
        """A Critical alert's reminder came due: a thread line, and the next one set.

        Nothing (and no next reminder) once the alert is acknowledged, no longer Critical, or
        Critical since another time than the timer was set for. While it is silenced the
        reminder is skipped, and the next one set.
        """
        alert = await self.get(alert_id)
        if (
            alert is None
            or alert.status != Status.FIRING
            or alert.level != Level.CRITICAL
            or alert.acked_by is not None
            or alert.level_since != _moment(since)
        ):
            return False
        now = self.clock()
        timers = [
            NewTimer(
                REMIND_TIMER,
                str(alert_id),
                now + self.config.alerts.repeat_every,
                {"since": since},
            )
        ]
        silenced = await self.holding_silence(alert)
        event = None
        if silenced is None:
            lasted = now - alert.level_since
            event = NewAlertEvent("reminder", f"Still Critical after {_span(lasted)}")
            timers.append(NewTimer(SYNC_TIMER, str(alert_id), now))
        await asyncio.to_thread(self.store.add_alert_event, alert_id, event, timers)
        self.wake(now)
        return silenced is None

    async def end_silence(self, environment: str, metric: str, until: datetime) -> Alert | None:
        """A silence ran out: lifted, and the latest alert brought up to date (posted now if
        it fired while silenced and is still open). None if the silence was replaced."""
        lifted = await asyncio.to_thread(self.store.end_alert_silence, environment, metric, until)
        if not lifted:
            return None
        state = await asyncio.to_thread(self.store.alert_state, environment, metric)
        if state is None or state.alert_id is None:
            return None
        alert = await self.get(state.alert_id)
        if alert is None:
            return None
        event = None
        if alert.status == Status.FIRING and alert.ts is not None:
            event = NewAlertEvent("unsilenced", f"Silence over; still {alert.level}")
        # A Critical alert's reminders kept their schedule through the silence (skipped).
        return await self._touch(alert.id, event)


_PRESS_TRIES = 5


def silence_key(environment: str, metric: str) -> str:
    return f"{environment}/{metric}"


def parse_silence_key(key: str) -> tuple[str, str] | None:
    environment, slash, metric = key.partition("/")
    return (environment, metric) if slash and environment and metric else None


def _moment(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _span(value: timedelta) -> str:
    minutes = round(value.total_seconds() / 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _row(state: AlertState) -> AlertStateRow:
    return AlertStateRow(
        environment=state.environment,
        metric=state.metric.value,
        level=state.level.value,
        recent=tuple(level.value for level in state.recent),
        readings=state.readings,
        changes=state.changes,
        flapping=state.flapping,
        since=state.since,
        value=state.value,
        problem=state.problem,
        detail=state.detail,
        sample=state.sample,
        checked_at=state.checked_at,
        alert_id=state.alert_id,
        version=state.version,
    )


def _state(row: AlertStateRow) -> AlertState:
    """A saved state; ValueError for a metric or level this bot does not know."""
    return AlertState(
        environment=row.environment,
        metric=Metric(row.metric),
        level=Level(row.level),
        recent=tuple(Level(level) for level in row.recent),
        readings=row.readings,
        changes=row.changes,
        flapping=row.flapping,
        since=row.since,
        value=row.value,
        problem=row.problem,
        detail=row.detail,
        sample=row.sample,
        checked_at=row.checked_at,
        alert_id=row.alert_id,
        version=row.version,
    )
