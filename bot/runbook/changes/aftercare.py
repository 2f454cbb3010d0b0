"""The checks after a change (a deploy's, a rollback's follow-up checks): is one
check a failure, and why. The Slack side (bot/slack/changes/aftercare.py) runs them on
durable timers and says what they found, each kind in its own way."""

from __future__ import annotations

from dataclasses import dataclass

from bot.runbook.changes.activate import reports_other_version
from bot.runbook.health.health import Health, HealthResult


@dataclass(frozen=True)
class CheckVerdict:
    failed: bool
    # Why it failed; for a check that passed, what the check found (its first reason, or its
    # class: a Degraded service that still counts as up says why it is degraded).
    reason: str


def judge_check(result: HealthResult, expected_version: str | None) -> CheckVerdict:
    """A failure is an Unhealthy service, or one that reports another version than the change
    left it on (when both are known)."""
    found = result.reasons[0] if result.reasons else result.health.value
    if result.health is Health.UNHEALTHY:
        return CheckVerdict(True, found)
    other = reports_other_version(result.version or None, expected_version or None)
    if other is not None:
        return CheckVerdict(True, other)
    return CheckVerdict(False, found)
