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
from functools import partial
from typing import Any

from bot.acks_first import ACKS_FIRST
from bot.clock import Clock, utc_now
from bot.config import Config
from bot.runbook.alerts.silences import extension, holds, needs_approver
from bot.runbook.alerts.states import (
    AlertChange,
    AlertState,
    Metric,
    Observation,
    Policy,
    Status,
    Transition,
    change_text,
    step,
)
from bot.runbook.levels import Level
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
CI = "ci"  # the build-time alert's scope: the CI's builds, not an environment
STEPS_BETWEEN_ACKS = 100  # a state step is ~15-30 µs: a pause for acks every few ms

Wake = Callable[[datetime], None]


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
            for n, observation in enumerate(observations, start=1):
                if n % STEPS_BETWEEN_ACKS == 0:
                    # A round over hundreds of environments is 10-50 ms of steps on the loop:
                    # a burst of commands that arrives meanwhile is acked in between.
                    await ACKS_FIRST.between()
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
        env, metric = state.environment, state.metric.value
        if change == AlertChange.FIRED:
            return AlertWrite(
                env, metric, None, _columns(state, transition, now), **self._timers(transition, now)
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
        if change == AlertChange.QUIET:  # recorded, not shown: no line, no timer
            return AlertWrite(
                env, metric, state.alert_id, {"level": transition.after.value}, bump=False
            )
        line = NewAlertEvent(
            change.value, change_text(state.metric, transition, state, self.policy)
        )
        return AlertWrite(
            env,
            metric,
            state.alert_id,
            _columns(state, transition, now),
            line,
            **self._timers(transition, now),
        )

    def _timers(self, transition: Transition, now: datetime) -> dict[str, Any]:
        """The timers a change sets (`timers`) and ends (`cancel`): every shown change syncs
        the message; a Critical one (re)starts the reminder; a move out of Critical, a
        resolution and flapping end it (a settled alert keeps what it had)."""

        def sync(alert_id: int) -> list[NewTimer]:
            return [NewTimer(SYNC_TIMER, str(alert_id), now)]

        def reminding(alert_id: int) -> list[NewTimer]:
            return [*sync(alert_id), self._reminder(alert_id, now)]

        def no_reminder(alert_id: int) -> list[tuple[str, str]]:
            return [(REMIND_TIMER, str(alert_id))]

        change, critical = transition.change, transition.after == Level.CRITICAL
        if change in (AlertChange.RESOLVED, AlertChange.FLAPPING):
            return {"timers": sync, "cancel": no_reminder}
        if change in (AlertChange.RAISED, AlertChange.LOWERED) and not critical:
            return {"timers": sync, "cancel": no_reminder}
        return {"timers": reminding if critical else sync}

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


def _columns(state: AlertState, transition: Transition, now: datetime) -> dict[str, object]:
    """The alert row's columns after a shown change (QUIET writes only its level)."""
    change, after = transition.change, transition.after
    reading: dict[str, object] = {
        "value": state.value,
        "problem": state.problem,
        "detail": state.detail,
    }
    if change == AlertChange.FIRED:
        opened = {"status": Status.FIRING.value, "opened_at": now, "peak_level": after.value}
        return {**opened, "level": after.value, "level_since": now, **reading}
    resolved = change == AlertChange.RESOLVED or (
        change == AlertChange.SETTLED and after == Level.NORMAL
    )
    if resolved:
        return {
            "status": Status.RESOLVED.value,
            "level": Level.NORMAL.value,
            "resolved_at": now,
            **reading,
        }
    if change == AlertChange.FLAPPING:
        flapping = {"status": Status.FLAPPING.value, "resolved_at": None}
        return {**flapping, "level": after.value, **reading}
    values: dict[str, object] = {"level": after.value, "level_since": now}
    if change == AlertChange.SETTLED:  # back to firing at the level the metric ended at
        values.update(status=Status.FIRING.value, resolved_at=None)
    if after == Level.CRITICAL:
        values["peak_level"] = Level.CRITICAL.value
    return {**values, **reading}


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
