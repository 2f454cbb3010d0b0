"""Hand-offs: at each change of a rotation's turn, tell the incoming person what is open.

Each rotation level has a durable timer (`oncall.handoff`) at its next hand-off, so a bot
restarted across one still announces it. When it fires, `fell_due` decides what there is
to say and sets the timer of the hand-off after; the Slack side sends the messages and
records each one, so a retried timer sends only what is missing.

- A timer for a hand-off the config no longer has (the rotation changed) is dropped.
- A hand-off overtaken by a later one (the bot was down for both) is not announced: the
  timer moves to the latest hand-off passed, which is.
- `plan` sets the timers at start (and every PLAN_EVERY, in case the store was down then);
  a timer already waiting is left as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.clock import Clock, utc_now
from bot.runbook.alerts.states import Status as AlertStatus
from bot.runbook.incidents.escalation import Level
from bot.runbook.oncall.oncall import OnCall
from bot.store import Alert, EnvironmentLock, Incident, NewTimer, Store
from bot.store.oncall import OnCallStore

log = logging.getLogger(__name__)

HANDOFF_TIMER = "oncall.handoff"
PLAN_EVERY = timedelta(hours=1)
_STILL_OPEN = (AlertStatus.FIRING.value, AlertStatus.FLAPPING.value)


def handoff_timer(level: Level, at: datetime) -> NewTimer:
    at = at.astimezone(UTC)
    key = f"{at:%Y-%m-%dT%H:%M:%SZ} {level.name}"[:128]
    return NewTimer(HANDOFF_TIMER, key, at, {"level": level.name, "at": at.isoformat()})


@dataclass(frozen=True)
class OpenWork:
    """What is open as a turn begins, from the store."""

    incidents: list[Incident]
    alerts: list[Alert]
    locks: list[EnvironmentLock]


async def open_work(store: Store, incidents_limit: int = 100) -> OpenWork:
    """The unresolved incidents (oldest first, up to the limit), the firing or flapping
    alerts, and the environment locks."""
    incidents = await asyncio.to_thread(store.unresolved_incidents, incidents_limit)
    alerts = [
        alert
        for status in _STILL_OPEN
        for alert in await asyncio.to_thread(store.alerts, None, status)
    ]
    locks = await asyncio.to_thread(store.environment_locks)
    return OpenWork(incidents, alerts, locks)


@dataclass(frozen=True)
class Handoff:
    number: int  # the level's number, 1-based
    level: Level
    at: datetime
    incoming: tuple[str, ...]  # on call from `at`, and not just before it
    outgoing: tuple[str, ...]  # on call just before `at`, and not from it
    until: datetime  # the hand-off after
    open: OpenWork


class Handoffs:
    def __init__(
        self,
        store: Store,
        on_call: OnCall,
        notices: OnCallStore,
        *,
        clock: Clock = utc_now,
        wake: Callable[[datetime], None] = lambda due_at: None,
    ) -> None:
        self.store = store
        self.on_call = on_call
        self.notices = notices
        self.clock = clock
        self.wake = wake

    async def plan(self, levels: Sequence[Level]) -> None:
        """Make sure every rotation level has a timer waiting for its next hand-off."""
        now = self.clock()
        for level in levels:
            if level.rotation is None:
                continue
            timer = handoff_timer(level, level.rotation.next_handoff(now))
            waiting = await asyncio.to_thread(self.store.pending_timers, timer.kind, timer.key)
            if not waiting:
                await self._set(timer)

    async def fell_due(self, levels: Sequence[Level], payload: dict[str, object]) -> Handoff | None:
        """The hand-off a timer was set for, with its next timer set; None: nothing to say."""
        name, at = payload.get("level"), _time(payload.get("at"))
        number, level = next(
            ((n, lv) for n, lv in enumerate(levels, 1) if lv.name == name), (0, None)
        )
        rotation = level.rotation if level is not None else None
        if level is None or rotation is None or at is None or not rotation.is_handoff(at):
            log.info("hand-off timer for %r at %s is not in the config any more; dropped", name, at)
            return None
        now = self.clock()
        until = rotation.next_handoff(at)
        if until <= now:
            latest = rotation.handoff_at(rotation.turn_at(now))
            log.info("hand-off of %s at %s overtaken by the one at %s", name, at, latest)
            await self._set(handoff_timer(level, latest))
            return None
        await self._set(handoff_timer(level, until))
        before = await self.on_call.on_call(level, at - timedelta(microseconds=1))
        after = await self.on_call.on_call(level, at)
        return Handoff(
            number,
            level,
            at,
            incoming=tuple(p for p in after if p not in before),
            outgoing=tuple(p for p in before if p not in after),
            until=until,
            open=await open_work(self.store),
        )

    async def sent(self, handoff: Handoff) -> set[str]:
        """Whom a message about this hand-off went to already (users and channels)."""
        return await asyncio.to_thread(self.notices.handoff_notices, handoff.level.name, handoff.at)

    async def record(self, handoff: Handoff, target: str, error: str | None = None) -> None:
        await asyncio.to_thread(
            self.notices.record_handoff_notice, handoff.level.name, handoff.at, target, error
        )

    async def _set(self, timer: NewTimer) -> None:
        await asyncio.to_thread(
            self.store.schedule_timer, timer.kind, timer.key, timer.due_at, timer.payload
        )
        self.wake(timer.due_at)


def _time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
