"""Time-driven work, on APScheduler in the bot's own event loop.

Two kinds:
- Periodic jobs (`every`): the scheduled checks, every check_interval. A run still going
  when the next is due is not started twice; missed runs coalesce into one. After the first
  run their runs fall on beats shared by all of them (bot/clock.py's next_beat: the checks
  every 15 s, the store watch every 5 s and the checking lease every 2.5 s wake the loop
  together), not on a beat of each job's own.
- Durable timers: an escalation's next level, an approval's expiry, a reminder. They are
  rows in the store with a due time (`schedule`), not asyncio timers, so a restarted bot — or
  another replica on the same database — picks them up. One periodic sweep claims the due
  rows and runs the handler registered for each row's kind (`on`). A claim is a short lease
  (15 s), renewed every third of it while the handler runs: a claimer that died (SIGKILL, a
  lost node) delays its timers by at most the lease, not minutes. A handler whose claim was
  lost meanwhile (its process stalled past the lease and another replica claimed the timer)
  is cancelled at its next renewal, and its claim's token (the attempt number) no longer
  matches, so it cannot mark the timer fired or give it back.

Exactly once, from the handler's side: a handler can run again if the bot dies between its
effect and the row being marked fired. Handlers make that harmless by carrying a token in
the payload (the escalation step the timer was set for, say) and doing nothing when the
subject has moved on. A handler that raises is retried with backoff, never dropped: a page
that could not be posted because Slack was down goes out when Slack is back. A handler that
cannot run yet (another replica is working on the same incident) raises RetryLater: tried
again after its delay, without an error in the log.

The sweep sleeps when nothing is due: after each one it asks the store when the next timer
can be claimed (`next_timer_at`: a due time, or the end of another's claim) and sleeps until
then, never longer than a safety poll (30 s). Timers can also be written by the store inside
a larger transaction (an incident's state change and its next deadline, together); whoever
does that calls `sweep_at(due_at)` so the sweep runs when they fall due. On PostgreSQL the
other replicas hear of every timer set (LISTEN/NOTIFY, bot/store/timers.py) and plan their
sweep the same way; on SQLite another process's timer is found by the safety poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.acks_first import ACKS_FIRST
from bot.clock import Clock, next_beat, utc_now
from bot.process import THIS_PROCESS
from bot.store import Store, StoreError, Timer

log = logging.getLogger(__name__)

TimerHandler = Callable[[Timer], Awaitable[None]]
PeriodicJob = Callable[[], Awaitable[None]]

# The longest the sweep sleeps: a timer set where no notice reaches this bot (another
# process on SQLite, a lost LISTEN connection) is fired at most this late.
DEFAULT_SWEEP_EVERY = timedelta(seconds=30)
# After a failed sweep (the store away), the next one is tried this soon.
SWEEP_RETRY_AFTER = timedelta(seconds=5)
DEFAULT_LEASE = timedelta(seconds=15)
MAX_RETRY_DELAY = timedelta(minutes=5)
# A timer nobody here handles may belong to a newer version of the bot sharing the database.
UNHANDLED_RETRY_DELAY = timedelta(minutes=5)


class ClaimLost(Exception):
    """A timer's claim passed to another replica while its handler ran here."""


class RetryLater(Exception):
    """Raised by a handler that cannot do its work now: try again after `delay`."""

    def __init__(self, reason: str, delay: timedelta = timedelta(seconds=1)) -> None:
        super().__init__(reason)
        self.delay = delay


def retry_delay(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s … up to 5 minutes between tries of a failing timer."""
    return min(MAX_RETRY_DELAY, timedelta(seconds=5 * 2 ** max(0, attempts - 1)))


class Scheduler:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utc_now,
        sweep_every: timedelta = DEFAULT_SWEEP_EVERY,
        lease: timedelta = DEFAULT_LEASE,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.sweep_every = sweep_every
        self.lease = lease
        self.owner = owner or THIS_PROCESS
        self._handlers: dict[str, TimerHandler] = {}
        self._executor = _DrainingExecutor()
        self._aps = AsyncIOScheduler(timezone=UTC, executors={"default": self._executor})
        self._firing: set[asyncio.Task[object]] = set()
        self._next_sweep: asyncio.TimerHandle | None = None
        self._listening: asyncio.Task[None] | None = None

    # --- set-up -------------------------------------------------------------------------

    def on(self, kind: str, handler: TimerHandler) -> None:
        """Run handler for every due timer of this kind."""
        self._handlers[kind] = handler

    def every(
        self, name: str, interval: timedelta, job: PeriodicJob, *, start_now: bool = True
    ) -> None:
        """Run job every interval (the first run at once, unless start_now is False)."""
        first = datetime.now(UTC) if start_now else datetime.now(UTC) + interval
        self._aps.add_job(
            job,
            _OnTheBeat(seconds=interval.total_seconds(), timezone=UTC),
            id=name,
            name=name,
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
        )

    def remove(self, name: str) -> None:
        """Stop the periodic job `name` (a run under way finishes)."""
        with contextlib.suppress(JobLookupError):
            self._aps.remove_job(name)

    def start(self) -> None:
        """Start the periodic jobs and the timer sweep (the first at once: timers left by a
        previous run). Call it on the event loop."""
        self._aps.start()
        self._listening = asyncio.create_task(
            self.store.listen_timers(self.sweep_at), name="timers-listen"
        )
        self._sweep_soon()

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._next_sweep is not None:
            self._next_sweep.cancel()
            self._next_sweep = None
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(BaseException):
                await self._listening
        if self._aps.running:
            self._aps.pause()
            await self._executor.drain(grace_s)
            self._aps.shutdown(wait=False)
        if self._firing:
            _, late = await asyncio.wait(set(self._firing), timeout=grace_s)
            for task in late:
                task.cancel()  # its lease runs out and a restarted bot fires it again

    # --- timers -------------------------------------------------------------------------

    async def schedule(
        self, kind: str, key: str, due_at: datetime, payload: dict[str, object] | None = None
    ) -> None:
        """Set (kind, key)'s timer to due_at, replacing a pending one. Raises StoreError."""
        await asyncio.to_thread(self.store.schedule_timer, kind, key, due_at, payload)
        self.sweep_at(due_at)

    async def cancel(self, kind: str, key: str) -> None:
        await asyncio.to_thread(self.store.cancel_timers, kind, key)

    def sweep_at(self, due_at: datetime) -> None:
        """Sweep when a timer falls due (unless a sweep is planned before then).

        Call it on the event loop for a timer written without `schedule` (in a store
        transaction of its own).
        """
        if not self._aps.running:
            return
        self._plan_sweep(max(0.0, (due_at - self.clock()).total_seconds()))

    def _plan_sweep(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        delay_s = min(delay_s, self.sweep_every.total_seconds())
        if self._next_sweep is not None:
            if self._next_sweep.when() <= loop.time() + delay_s:
                return
            self._next_sweep.cancel()
        self._next_sweep = loop.call_later(delay_s, self._sweep_soon)

    def _sweep_soon(self) -> None:
        self._next_sweep = None
        task = asyncio.create_task(self._sweep_and_plan(), name="timers-sweep")
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    async def _sweep_and_plan(self) -> None:
        """One sweep, then the next planned for when the next timer can be claimed."""
        if await self._sweep() < 0:
            self._plan_sweep(SWEEP_RETRY_AFTER.total_seconds())
            return
        try:
            next_at = await asyncio.to_thread(self.store.next_timer_at)
        except StoreError:
            self._plan_sweep(SWEEP_RETRY_AFTER.total_seconds())
            return
        if self._aps.running:
            self._plan_sweep(
                self.sweep_every.total_seconds()
                if next_at is None
                else max(0.0, (next_at - self.clock()).total_seconds())
            )

    async def sweep(self) -> int:
        """Claim the due timers and start their handlers; returns how many were claimed."""
        return max(0, await self._sweep())

    async def _sweep(self) -> int:
        """sweep(), but -1 when the store could not be asked."""
        try:
            timers = await asyncio.to_thread(
                self.store.claim_due_timers, self.owner, self.clock(), self.lease
            )
        except StoreError as exc:
            log.error("timers not swept: %s — check the database at EVENTMESH_DATABASE_URL", exc)
            return -1
        for timer in timers:
            task = asyncio.create_task(self._fire(timer), name=f"timer-{timer.kind}-{timer.id}")
            self._firing.add(task)
            task.add_done_callback(self._firing.discard)
        return len(timers)

    async def settle(self) -> None:
        """Wait for the handlers started by sweeps so far (tests and shutdown)."""
        while self._firing:
            await asyncio.wait(set(self._firing))

    async def _fire(self, timer: Timer) -> None:
        await ACKS_FIRST.turn()  # due is due, but a burst's acks go first (bot/acks_first.py)
        handler = self._handlers.get(timer.kind)
        try:
            if handler is None:
                log.error(
                    "timer %s #%d (%s) has no handler in this bot; trying again later",
                    timer.kind,
                    timer.id,
                    timer.key,
                )
                await self._retry(timer, UNHANDLED_RETRY_DELAY)
                return
            try:
                await self._run_claimed(timer, handler)
            except ClaimLost:
                log.warning(
                    "timer %s #%d (%s) stopped here: its claim passed to another replica",
                    timer.kind,
                    timer.id,
                    timer.key,
                )
                return
            except RetryLater as later:
                log.info("timer %s #%d (%s) deferred: %s", timer.kind, timer.id, timer.key, later)
                await self._retry(timer, later.delay)
                return
            except StoreError as exc:
                # The database is away: one line (bot/store_watch.py says the rest), no trace.
                delay = retry_delay(timer.attempts)
                log.error(
                    "timer %s #%d (%s) not done, the store is unreachable (%s); trying again "
                    "in %ds",
                    timer.kind,
                    timer.id,
                    timer.key,
                    exc,
                    delay.total_seconds(),
                )
                await self._retry(timer, delay)
                return
            except Exception:
                delay = retry_delay(timer.attempts)
                log.exception(
                    "timer %s #%d (%s) failed on try %d; trying again in %ds",
                    timer.kind,
                    timer.id,
                    timer.key,
                    timer.attempts,
                    delay.total_seconds(),
                )
                await self._retry(timer, delay)
                return
            finished = await asyncio.to_thread(
                self.store.finish_timer, timer.id, self.owner, timer.attempts
            )
            if not finished:
                log.warning("timer %s #%d ran after its lease was lost", timer.kind, timer.id)
        except StoreError as exc:
            # The lease runs out and the timer is fired again: late, never lost.
            log.error("timer %s #%d not marked done: %s", timer.kind, timer.id, exc)

    async def _run_claimed(self, timer: Timer, handler: TimerHandler) -> None:
        """Run handler, renewing the timer's claim every third of the lease; ClaimLost (and
        the handler cancelled) once it is another's, or could not be renewed before it ran
        out (the database away: another replica may have it by then)."""
        loop = asyncio.get_running_loop()
        lease_s = self.lease.total_seconds()
        renew_s = lease_s / 3
        valid_until = loop.time() + lease_s
        work = asyncio.ensure_future(handler(timer))
        try:
            while not (await asyncio.wait({work}, timeout=renew_s))[0]:
                asked = loop.time()
                try:
                    kept: bool | None = await asyncio.to_thread(
                        self.store.renew_timer,
                        timer.id,
                        self.owner,
                        timer.attempts,
                        self.clock() + self.lease,
                    )
                except StoreError:
                    kept = None
                if kept:
                    valid_until = asked + lease_s
                elif kept is False or loop.time() + renew_s >= valid_until:
                    raise ClaimLost()
            work.result()
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work

    async def _retry(self, timer: Timer, delay: timedelta) -> None:
        due_at = self.clock() + delay
        await asyncio.to_thread(
            self.store.retry_timer, timer.id, self.owner, due_at, timer.attempts
        )
        self.sweep_at(due_at)


class _OnTheBeat(IntervalTrigger):
    """APScheduler's interval trigger, its runs on the shared beats (bot/clock.py)."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        after = previous_fire_time or now
        beat = next_beat(self.interval_length, after.timestamp())
        return datetime.fromtimestamp(beat, tz=self.timezone)


class _DrainingExecutor(AsyncIOExecutor):
    """APScheduler's asyncio executor, plus a way to let running jobs end before shutdown.

    Its shutdown cancels jobs mid-way and logs each as a crash; a sweep is short, so the bot
    waits for it instead.
    """

    async def drain(self, timeout_s: float) -> None:
        running = {future for future in self._pending_futures if not future.done()}
        if running:
            await asyncio.wait(running, timeout=timeout_s)
