"""Abuse bounded: how often one person may run a command, how many incidents they may open,
and how many commands may log into one environment's hosts at once (the config's `limits`).

The rates are counted in the store, from rows the bot writes anyway: a command is its audit row
(bot/store/audit.py), an incident opened with /escalate is its incident row. So they hold across
restarts and across replicas sharing one database, for the price of one indexed query per
command; refusals for the limit are audited as `limited` and do not count. With the store
down, the rates are not enforced (logged once a minute at most): /health must keep working.

The per-environment bound is about what runs in this process — SSH sessions held open right
now — and is kept in memory: with several replicas, each allows `ssh_per_environment`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.clock import Clock, utc_now
from bot.config import LimitSettings, Rate
from bot.slack.ack_reads import read_for_ack
from bot.store import Store, StoreError

log = logging.getLogger(__name__)

ESCALATE_SOURCE = "/escalate"
_WARN_EVERY_S = 60.0


def wait_for(rate: Rate, times: Sequence[datetime], now: datetime) -> float | None:
    """Seconds until one more is allowed under `rate` given the earlier `times` inside its
    window (None: allowed now)."""
    recent = sorted(t for t in times if t > now - rate.per)
    if len(recent) < rate.count:
        return None
    frees_at = recent[len(recent) - rate.count] + rate.per
    return max(1.0, math.ceil((frees_at - now).total_seconds()))


class Limits:
    """The per-user rates, counted in the store."""

    def __init__(self, settings: LimitSettings, store: Store, *, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._warned_at = -_WARN_EVERY_S

    async def command_wait(self, user_id: str, command: str) -> float | None:
        """Seconds `user_id` must wait before running `command` again (None: go ahead)."""
        rate = self.settings.commands
        now = self.clock()
        times = await self._read(self.store.audit_times, user_id, command, now - rate.per)
        return wait_for(rate, times, now)

    async def escalation_wait(self, user_id: str) -> float | None:
        """Seconds before `user_id` may open another incident with /escalate."""
        rate = self.settings.escalations
        now = self.clock()
        times = await self._read(
            self.store.incidents_opened, user_id, ESCALATE_SOURCE, now - rate.per
        )
        return wait_for(rate, times, now)

    async def _read(
        self, query: Callable[[str, str, datetime], list[datetime]], *args: object
    ) -> list[datetime]:
        try:
            return await read_for_ack(query, *args)
        except StoreError as exc:
            if time.monotonic() - self._warned_at > _WARN_EVERY_S:
                self._warned_at = time.monotonic()
                log.warning("rate limits not enforced: the store is unavailable (%s)", exc)
            return []


@dataclass
class _Running:
    what: str
    user_id: str
    since: float = field(default_factory=time.monotonic)


class EnvironmentSlots:
    """At most `per_environment` SSH-opening commands running at once for each environment."""

    def __init__(self, per_environment: int) -> None:
        self.per_environment = per_environment
        self._running: dict[str, list[_Running]] = {}

    def take(self, environment: str, what: str, user_id: str) -> Callable[[], None] | str:
        """A release function, or (all slots taken) a sentence saying what runs."""
        running = self._running.setdefault(environment, [])
        if len(running) >= self.per_environment:
            first = running[0]
            ago = round(time.monotonic() - first.since)
            return (
                f"{first.what} is logging into {environment}'s hosts right now (<@{first.user_id}>,"
                f" {ago} s ago); one at a time per environment (limits.ssh_per_environment) — "
                "try again once it has answered"
            )
        entry = _Running(what, user_id)
        running.append(entry)

        def release() -> None:
            if entry in running:
                running.remove(entry)
            if not running:
                self._running.pop(environment, None)

        return release

    def running(self, environment: str) -> int:
        return len(self._running.get(environment, ()))
