"""Readiness (GET /readyz, `eventmesh_bot_ready`): whether this bot can do its job now.

/healthz says the process answers (liveness); /readyz says whether it is of use: not when
the store is unreachable, nor when Slack has been out of reach for longer than
`slack.ready_grace` (5 minutes: a blip is not worth a restart) — the Web API as the outbox
finds it (bot/slack/slack_health.py: what it sends is the probe, nothing polls Slack), or the
Socket Mode connection as its client keeps it. The store's state is StoreWatch's.

Each change of readiness is one log line, and so is each change of the Socket Mode
connection; the Web API's and the store's outages are logged where they are found.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.clock import Clock, utc_now
from bot.slack.slack_health import SlackHealth
from bot.store_watch import StoreWatch
from bot.telemetry import Telemetry

log = logging.getLogger(__name__)


class SocketConnection(Protocol):
    """What readiness reads of a Socket Mode client (slack_sdk's AsyncBaseSocketModeClient)."""

    def is_connected(self) -> Awaitable[bool]: ...


@dataclass(frozen=True)
class ReadinessState:
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.problems


class Readiness:
    def __init__(
        self,
        telemetry: Telemetry,
        store_watch: StoreWatch,
        grace: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self.telemetry = telemetry
        self.store_watch = store_watch
        self.grace = grace
        self.clock = clock
        self.web_api: SlackHealth | None = None  # the outbox's, once the services run
        self.socket: SocketConnection | None = None  # Socket Mode's client, in that mode
        self.socket_down_since: datetime | None = None
        self._problems: tuple[str, ...] = ()
        self.telemetry.ready.set(1)

    def watch_socket(self, socket: SocketConnection) -> None:
        """Socket Mode: not connected until its client says so."""
        self.socket, self.socket_down_since = socket, self.clock()

    async def check(self) -> ReadinessState:
        """Read the parts' states now; log and count a change."""
        await self._read_socket()
        problems = tuple(p for p in (self._store(), self._web_api(), self._socket()) if p)
        self.telemetry.ready.set(0 if problems else 1)
        if problems and problems != self._problems:
            log.error("not ready: %s", "; ".join(problems))
        elif not problems and self._problems:
            log.warning("ready again: Slack and the store answer")
        self._problems = problems
        return ReadinessState(problems)

    async def _read_socket(self) -> None:
        if self.socket is None:
            return
        connected = await self.socket.is_connected()
        now = self.clock()
        if connected and self.socket_down_since is not None:
            away = (now - self.socket_down_since).total_seconds()
            log.warning("Socket Mode connected (after %.0f s without)", away)
            self.socket_down_since = None
        elif not connected and self.socket_down_since is None:
            log.warning("Socket Mode disconnected since %s UTC; reconnecting", f"{now:%H:%M:%S}")
            self.socket_down_since = now

    def _store(self) -> str | None:
        problem = self.store_watch.problem
        return f"the store is unreachable: {problem}" if problem else None

    def _web_api(self) -> str | None:
        health = self.web_api
        if health is None or not self._past_grace(health.down_since):
            return None
        assert health.down_since is not None
        return f"Slack Web API unreachable since {health.down_since:%H:%M:%S} UTC ({health.cause})"

    def _socket(self) -> str | None:
        if not self._past_grace(self.socket_down_since):
            return None
        assert self.socket_down_since is not None
        return f"Socket Mode disconnected since {self.socket_down_since:%H:%M:%S} UTC"

    def _past_grace(self, since: datetime | None) -> bool:
        return since is not None and self.clock() - since > self.grace


def periodic(*checks: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """One scheduled job running `checks` in order (the store's, then readiness)."""

    async def run() -> None:
        for check in checks:
            await check()

    return run
