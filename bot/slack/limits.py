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

import asyncio
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


class CommandTimes:
    """When each user ran a command, read for many users at once.

    A burst of 50 commands from 50 people made 50 reads, queued on the ack path's 4 threads
    (bot/slack/ack_reads.py), each waiting for the GIL with everything else the bot does:
    p50 37-101 ms of an ack under load (benchmarks/README.md). Reads asked for while one is
    running go out together in the next query, so a burst costs a few queries, not 50.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, list[tuple[str, datetime, asyncio.Future[list[datetime]]]]] = {}
        self._reading: set[str] = set()
        self._readers: set[asyncio.Task[None]] = set()

    async def since(self, user_id: str, command: str, since: datetime) -> list[datetime]:
        """audit_times(user_id, command, since), in the next query for `command`."""
        answer: asyncio.Future[list[datetime]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(command, []).append((user_id, since, answer))
        if command not in self._reading:
            self._reading.add(command)
            reader = asyncio.get_running_loop().create_task(self._read(command))
            self._readers.add(reader)  # the loop keeps only a weak reference to a task
            reader.add_done_callback(self._readers.discard)
        return await answer

    async def _read(self, command: str) -> None:
        try:
            while batch := self._waiting.pop(command, []):
                users = {user_id for user_id, _, _ in batch}
                earliest = min(since for _, since, _ in batch)
                try:
                    times = await read_for_ack(self.store.audit_times_of, users, command, earliest)
                except Exception as exc:  # each waiting command handles it as its own read's
                    for _, _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for user_id, since, answer in batch:
                    if not answer.done():
                        answer.set_result([t for t in times.get(user_id, []) if t >= since])
        finally:
            self._reading.discard(command)


class Limits:
    """The per-user rates, counted in the store."""

    def __init__(self, settings: LimitSettings, store: Store, *, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._warned_at = -_WARN_EVERY_S
        self._command_times = CommandTimes(store)

    async def command_wait(self, user_id: str, command: str) -> float | None:
        """Seconds `user_id` must wait before running `command` again (None: go ahead)."""
        rate = self.settings.commands
        now = self.clock()
        try:
            times = await self._command_times.since(user_id, command, now - rate.per)
        except StoreError as exc:
            self._unenforced(exc)
            times = []
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
            self._unenforced(exc)
            return []

    def _unenforced(self, exc: StoreError) -> None:
        if time.monotonic() - self._warned_at > _WARN_EVERY_S:
            self._warned_at = time.monotonic()
            log.warning("rate limits not enforced: the store is unavailable (%s)", exc)


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
