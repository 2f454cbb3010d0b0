"""Slack in trouble, for a while: the fault modes of the Slack fake (tests/support/slack_fake.py).

A fault applies to everything the fake serves — Web API methods, response_urls and upload
URLs — from the moment it is set until it is healed (or its time is up):

- ``5xx``: HTTP 503 (or the status given) with a plain-text body, as a load balancer in front
  of a sick Slack answers; nothing is carried out.
- ``429``: HTTP 429 ``{"ok": false, "error": "ratelimited"}`` with ``Retry-After``; nothing is
  carried out.
- ``ratelimited``: HTTP 200 ``{"ok": false, "error": "ratelimited"}`` without ``Retry-After``
  (a response_url, which has no such body, answers 429); nothing is carried out.
- ``refuse``: the fake stops listening, so connections are refused; it listens again on the
  same port when healed.
- ``drop``: the call is carried out (the message is posted, the reply shown), then the
  connection is closed before any answer: the client cannot tell whether it happened.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

FAULT_MODES = ("5xx", "429", "ratelimited", "refuse", "drop")
# Modes that answer without carrying the call out.
ANSWERING_MODES = frozenset({"5xx", "429", "ratelimited"})


@dataclass(frozen=True)
class Fault:
    """One fault period: its mode, the status a ``5xx`` answers, the ``Retry-After`` of a 429."""

    mode: str
    status: int = 503
    retry_after: int = 5
    since: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}: one of {', '.join(FAULT_MODES)}")
        if self.mode == "5xx" and not 500 <= self.status <= 599:
            raise ValueError(f"a 5xx fault answers a 5xx status, not {self.status}")

    @property
    def answers(self) -> bool:
        return self.mode in ANSWERING_MODES

    def web_api_answer(self) -> tuple[int, dict[str, str], bytes, str]:
        """(status, headers, body, content type) for a Web API call under this fault."""
        if self.mode == "5xx":
            return self.status, {}, b"upstream unavailable", "text/plain; charset=utf-8"
        body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
        if self.mode == "429":
            headers = {"Retry-After": str(self.retry_after)}
            return 429, headers, body, "application/json; charset=utf-8"
        return 200, {}, body, "application/json; charset=utf-8"

    def plain_answer(self) -> tuple[int, dict[str, str], bytes, str]:
        """The same for a response_url or an upload URL (plain text, no ``ok`` field)."""
        if self.mode == "5xx":
            return self.status, {}, b"upstream unavailable", "text/plain; charset=utf-8"
        headers = {"Retry-After": str(self.retry_after if self.mode == "429" else 1)}
        return 429, headers, b"rate_limited", "text/plain; charset=utf-8"

    @property
    def error(self) -> str:
        """What the fake records as the call's error."""
        return f"HTTP {self.status}" if self.mode == "5xx" else "ratelimited"


@dataclass(frozen=True)
class FaultPeriod:
    """A fault as it happened, for test reports: mode and monotonic start and end."""

    mode: str
    started: float
    ended: float | None = None
