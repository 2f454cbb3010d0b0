"""Whether Slack's Web API answers: one log line when it stops, one when it is back.

While it is away the outbox sends one message at a time as a probe, every few seconds (after
Slack's Retry-After when it gave one); the rest wait. The cause of the last outage is kept, so
a message that waited through it can say why it is late.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.slack.chat import ChatError

log = logging.getLogger("bot.slack.outbox")  # the outbox's lines: one place to read delivery

MAX_BACKOFF_S = 5.0


def backoff_s(attempts: int) -> float:
    """1, 2, 4, 5, 5… seconds: how long a message (or a probe) waits after its tries."""
    return min(MAX_BACKOFF_S, 2.0 ** max(0, attempts - 1))


class SlackHealth:
    """Whether Slack's Web API answers: one log line when it stops, one when it is back."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.down_since: datetime | None = None
        self.cause = ""
        self.failures = 0
        self.next_probe: datetime | None = None
        self.last_outage: tuple[datetime, datetime, str] | None = None  # since, until, cause

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def may_try(self) -> bool:
        """Whether a message may go now: Slack answers, or it is time to probe again."""
        return self.next_probe is None or self.clock() >= self.next_probe

    def outage_since(self, moment: datetime) -> str | None:
        """The cause of an outage that lasted past `moment` (the one now, or the last one)."""
        if self.down_since is not None:
            return self.cause
        if self.last_outage is not None and self.last_outage[1] >= moment:
            return self.last_outage[2]
        return None

    def failed(self, exc: ChatError) -> None:
        now = self.clock()
        self.failures += 1
        if self.down_since is None:
            self.down_since, self.cause = now, exc.describe()
            log.warning(
                "Slack Web API unreachable since %s UTC (%s); messages wait in the outbox",
                f"{now:%H:%M:%S}",
                self.cause,
            )
        wait = max(exc.retry_after_s or 0.0, backoff_s(self.failures))
        self.next_probe = now + timedelta(seconds=wait)

    def answered(self, waiting: Callable[[], int]) -> None:
        if self.down_since is None:
            return
        now = self.clock()
        away = (now - self.down_since).total_seconds()
        self.last_outage = (self.down_since, now, self.cause)
        self.down_since, self.failures, self.next_probe = None, 0, None
        log.warning(
            "Slack Web API reachable again after %.0f s, %d messages waiting", away, waiting()
        )
