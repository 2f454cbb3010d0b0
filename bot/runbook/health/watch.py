"""Watching an environment for a while: the runbook's monitor_health.sh and monitor_resources.sh.

A watch repeats a reading (a health check, a resources snapshot) every interval until its
duration is over or someone stops it, and yields after each reading so the caller can show
progress. `HealthTally` keeps what a health watch saw — the class, the latency, the
consecutive failures, the changes of state — and sums it up at the end.

Watches live in memory: each runs as one task in the workers' long lane, and the registry
lets a Stop button (or the bot shutting down) end it early. Nothing here knows about Slack.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from bot.clock import Clock, utc_now
from bot.runbook.health.health import Health, HealthResult

T = TypeVar("T")

DEFAULT_WATCH = timedelta(minutes=5)
LONGEST_WATCH = timedelta(hours=1)
# Each watch probes its environment every interval and keeps a message current: a bound on
# what one person's typing can make the bot do. Past it the next watch is refused, with why.
MAX_RUNNING_WATCHES = 50
# Of those, how many one person may hold (the config's limits.watches_per_user by default).
MAX_WATCHES_PER_USER = 10
# However short, a watch takes this many readings: one is a check, not a watch.
MIN_READINGS = 3

WatchKind = Literal["health", "resources"]


class WatchRefused(Exception):
    """A watch cannot start now; str(err) says why, for the person who asked."""


@dataclass(frozen=True)
class StopRequest:
    """Why a watch ended before its time: a person (`by`), or the bot shutting down."""

    at: datetime
    by: str | None = None  # a user id; None when the bot itself is stopping


@dataclass
class Watch:
    """One running watch: what it watches, for how long, and whether it was asked to stop."""

    id: str
    kind: WatchKind
    environment: str
    duration: timedelta
    interval: timedelta
    started_by: str
    started_at: datetime
    stop_request: StopRequest | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ends_at(self) -> datetime:
        return self.started_at + self.duration

    @property
    def expected_readings(self) -> int:
        """Readings in a full run: one at the start, then one every interval before the end."""
        return max(1, math.ceil(self.duration / self.interval))

    def stop(self, request: StopRequest) -> bool:
        """Ask the watch to end now; False if it was already asked (the first request wins)."""
        if self.stop_request is not None:
            return False
        self.stop_request = request
        self._stopped.set()
        return True

    async def readings(self, read: Callable[[], Awaitable[T]]) -> AsyncIterator[T]:
        """Call read() now and then every interval until the duration is over or a stop.

        Ticks keep to the schedule (start + k * interval): a slow reading does not push the
        next ones later, it skips the ticks it overran. After the last reading the watch
        still lasts until its end, so one that was not stopped did run its full time. A stop
        interrupts both the wait and a reading in flight, so Stop takes effect at once.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + self.duration.total_seconds()
        interval = self.interval.total_seconds()
        tick = 0
        while self.stop_request is None:
            due = start + tick * interval
            if due >= end:
                await self._wait_unless_stopped(asyncio.sleep(max(0.0, end - loop.time())))
                return
            if not await self._wait_unless_stopped(asyncio.sleep(max(0.0, due - loop.time()))):
                return
            reading = asyncio.ensure_future(read())
            if not await self._wait_unless_stopped(reading):
                return
            yield reading.result()
            tick = max(tick + 1, math.floor((loop.time() - start) / interval) + 1)

    async def _wait_unless_stopped(self, work: Awaitable[object]) -> bool:
        """Wait for work; True if it finished, False (work cancelled) if a stop came first."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return task.done() and not task.cancelled() and self.stop_request is None


def reading_every(duration: timedelta) -> timedelta:
    """The longest interval that still gives MIN_READINGS readings in `duration`: a third of
    it, rounded up to the microsecond so that the readings are exactly three, not four."""
    microseconds = duration // timedelta(microseconds=1)
    return timedelta(microseconds=-(-microseconds // MIN_READINGS))


class Watches:
    """The running watches of this bot, by id (the id a Stop button carries).

    A watch reads every check_interval, or more often when that would give it fewer than
    MIN_READINGS readings (`/health local watch 20s` with a 30 s check_interval: every 6.7 s).
    """

    def __init__(
        self,
        clock: Clock = utc_now,
        limit: int = MAX_RUNNING_WATCHES,
        per_user: int = MAX_WATCHES_PER_USER,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.per_user = per_user
        self._running: dict[str, Watch] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._running)

    def start(
        self,
        kind: WatchKind,
        environment: str,
        *,
        duration: timedelta,
        interval: timedelta,
        started_by: str,
    ) -> Watch:
        if self._closed:
            raise WatchRefused("The bot is shutting down; start the watch again once it is back.")
        if len(self._running) >= self.limit:
            raise WatchRefused(
                f"{len(self._running)} watches are running, the most this bot runs at once. "
                "Stop one, or wait for one to end."
            )
        theirs = sum(1 for w in self._running.values() if w.started_by == started_by)
        if theirs >= self.per_user:
            raise WatchRefused(
                f"You have {theirs} watches running, the most one person may run at once "
                f"(limits.watches_per_user; the bot runs {self.limit} in all). Stop one of "
                "yours, or wait for one to end."
            )
        watch = Watch(
            id=secrets.token_hex(8),
            kind=kind,
            environment=environment,
            duration=duration,
            interval=min(interval, reading_every(duration)),
            started_by=started_by,
            started_at=self.clock(),
        )
        self._running[watch.id] = watch
        return watch

    def finished(self, watch: Watch) -> None:
        self._running.pop(watch.id, None)

    def started_by(self, watch_id: str) -> str | None:
        """Who started a running watch (None: no such watch runs)."""
        watch = self._running.get(watch_id)
        return watch.started_by if watch is not None else None

    def stop(self, watch_id: str, user_id: str) -> Watch | None:
        """Stop a running watch for user_id; None if no such watch runs (it ended already)."""
        watch = self._running.get(watch_id)
        if watch is None:
            return None
        watch.stop(StopRequest(at=self.clock(), by=user_id))
        return watch

    def stop_all(self) -> None:
        """The bot is stopping: end every watch now (each still posts its summary)."""
        self._closed = True
        now = self.clock()
        for watch in list(self._running.values()):
            watch.stop(StopRequest(at=now))


# --- what a health watch saw ---------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    at: datetime
    health: Health
    latency_ms: float | None  # None: no answer
    reason: str | None


@dataclass(frozen=True)
class HealthChange:
    at: datetime
    before: Health
    after: Health


@dataclass(frozen=True)
class LatencyStats:
    minimum: float
    median: float
    maximum: float


@dataclass(frozen=True)
class HealthSummary:
    readings: int
    counts: dict[Health, int]
    latency: LatencyStats | None  # None: not one reading was answered
    failures: int
    longest_failure_run: int
    changes: tuple[HealthChange, ...]


class HealthTally:
    """A health watch's readings and what they add up to.

    A failure is an Unhealthy reading (no answer, an error status, a critical component
    down), as monitor_health.sh counts them; Degraded is a warning, not a failure.
    """

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.changes: list[HealthChange] = []
        self.consecutive_failures = 0
        self._longest_failure_run = 0

    @property
    def latest(self) -> Reading | None:
        return self.readings[-1] if self.readings else None

    def add(self, result: HealthResult) -> Reading:
        reading = Reading(
            at=result.checked_at,
            health=result.health,
            latency_ms=result.latency_ms,
            reason=result.reasons[0] if result.reasons else None,
        )
        previous = self.latest
        if previous is not None and previous.health is not reading.health:
            self.changes.append(HealthChange(reading.at, previous.health, reading.health))
        self.readings.append(reading)
        if reading.health is Health.UNHEALTHY:
            self.consecutive_failures += 1
            self._longest_failure_run = max(self._longest_failure_run, self.consecutive_failures)
        else:
            self.consecutive_failures = 0
        return reading

    def latencies(self) -> list[float | None]:
        return [r.latency_ms for r in self.readings]

    def summary(self) -> HealthSummary:
        counts = {health: 0 for health in Health}
        for reading in self.readings:
            counts[reading.health] += 1
        answered = [r.latency_ms for r in self.readings if r.latency_ms is not None]
        latency = (
            LatencyStats(min(answered), statistics.median(answered), max(answered))
            if answered
            else None
        )
        return HealthSummary(
            readings=len(self.readings),
            counts=counts,
            latency=latency,
            failures=counts[Health.UNHEALTHY],
            longest_failure_run=self._longest_failure_run,
            changes=tuple(self.changes),
        )
