"""Which replica runs the scheduled checks: the one holding the `checking` lease.

Every replica may keep `alerts.scheduled_checks: true`. Each asks for the lease (a row in the
store: bot/store/leases.py) every `renew_every`; the one that gets it starts the checks
(bot/runbook/alerts/monitor.py) at once, reloading the alert states from the store, and
renews the lease on the same beat. A holder that dies stops renewing: its lease runs out
after `ttl` and the next replica to ask takes over, so the checks resume within
ttl + renew_every — less than one check interval (`lease_timing`). A holder that cannot renew
(the database is away, another replica took over) stops checking before its lease can have
run out, and every alert-state write it still makes is fenced by the lease's token, so a late
one is refused rather than merged. A clean stop gives the lease up for the next at once.

A row, not a PostgreSQL advisory lock on a dedicated connection: the same code runs on
SQLite, and the token fences late writes, which a lock held by a connection cannot (a paused
process does not know its connection was dropped and its lock taken).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from bot.process import THIS_PROCESS
from bot.runbook.alerts.alerts import Alerts
from bot.runbook.alerts.monitor import Monitor
from bot.scheduler import Scheduler
from bot.store import Fence, Store, StoreError
from bot.telemetry import Telemetry

log = logging.getLogger(__name__)

LEASE = "checking"
MAX_TTL = timedelta(seconds=15)
MIN_TTL = timedelta(seconds=1)
JOB = "checking-lease"


def lease_timing(shortest_interval: timedelta) -> tuple[timedelta, timedelta]:
    """(ttl, renew_every) for checks every shortest_interval: a take-over within
    ttl + renew_every = 2/3 of the interval (at most 20 s), leaving the rest for the first
    check to start."""
    ttl = min(MAX_TTL, max(MIN_TTL, shortest_interval / 2))
    return ttl, ttl / 3


class CheckingLease:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        monitor: Monitor,
        alerts: Alerts,
        telemetry: Telemetry,
        *,
        holder: str = THIS_PROCESS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.monitor = monitor
        self.alerts = alerts
        self.telemetry = telemetry
        self.holder = holder
        self.monotonic = monotonic
        intervals = [env.check_interval for env in monitor.config.environments.values()]
        self.ttl, self.renew_every = lease_timing(min(intervals, default=timedelta(seconds=30)))
        self.fence: Fence | None = None
        self._valid_until = 0.0  # monotonic: when the lease runs out unless renewed
        self._store_failing = False
        telemetry.checking_lease.set(0)

    def start(self) -> None:
        self.scheduler.every(JOB, self.renew_every, self.tick)

    async def tick(self) -> None:
        """Ask for the lease, or renew it; start or stop the checks accordingly."""
        asked = self.monotonic()
        try:
            if self.fence is None:
                fence = await asyncio.to_thread(
                    self.store.acquire_lease, LEASE, self.holder, self.ttl
                )
                if fence is not None:
                    self._valid_until = asked + self.ttl.total_seconds()
                    await self._take_over(fence)
            elif await asyncio.to_thread(self.store.renew_lease, self.fence, self.ttl):
                self._valid_until = asked + self.ttl.total_seconds()
            else:
                await self._stand_down("another replica holds the checking lease now")
            self._store_failing = False
        except StoreError as exc:
            if not self._store_failing:
                log.error("checking lease: %s — check EVENTMESH_DATABASE_URL", exc)
            self._store_failing = True
            # Stop before the lease can run out: past that another replica may check.
            next_try = self.monotonic() + self.renew_every.total_seconds()
            if self.fence is not None and next_try >= self._valid_until:
                await self._stand_down(f"the lease could not be renewed ({exc})")

    async def release(self) -> None:
        """A clean stop: the checks end here and the lease is free for the next replica."""
        fence = self.fence
        if fence is None:
            return
        self.fence = None
        self.alerts.stand_down()
        self.telemetry.checking_lease.set(0)
        log.info("giving up the checking lease: this replica is stopping")
        try:
            await asyncio.to_thread(self.store.release_lease, fence)
        except StoreError as exc:
            log.warning("checking lease not given up (%s); it runs out in %s", exc, self.ttl)

    async def _take_over(self, fence: Fence) -> None:
        self.fence = fence
        await self.alerts.take_over(fence)
        for name, interval, job in self.monitor.jobs():
            self.scheduler.every(name, interval, job)
        self.telemetry.checking_lease.set(1)
        log.info(
            "this replica runs the scheduled checks now (checking lease, token %d)", fence.token
        )

    async def _stand_down(self, why: str) -> None:
        self.fence = None
        self.alerts.stand_down()
        for name, _, _ in self.monitor.jobs():
            self.scheduler.remove(name)
        self.monitor.stand_down()
        self.telemetry.checking_lease.set(0)
        log.warning("this replica stopped running the scheduled checks: %s", why)
