"""What a silence may do: how long, and over which alerts (the Silence button's rules).

- A silence is bounded: a press silences for `alerts.silence_for`, and presses while it is in
  force extend it, but never past `alerts.silence_max` from when it began. A press that cannot
  extend it further changes nothing and says so.
- A Critical alert of an environment that `requires_approval` (production) is silenced only by
  an approver: an approver's silence holds its pages; anyone else's press is refused, and a
  silence someone else set earlier (while it was a Warning, say) does not hold its pages.

Who may press Silence at all (responders) is the policy's (bot/slack/access.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.config import AlertSettings, Config
from bot.runbook.levels import Level
from bot.store import Alert, AlertSilence


def needs_approver(alert: Alert, config: Config) -> bool:
    """Whether only an approver may silence the alert as it is now."""
    env = config.environments.get(alert.environment)
    return env is not None and env.requires_approval and alert.level == Level.CRITICAL


def holds(silence: AlertSilence, alert: Alert, config: Config) -> bool:
    """Whether `silence` keeps `alert` quiet (posts, reminders, pages)."""
    return not needs_approver(alert, config) or config.access.may_approve(silence.silenced_by)


@dataclass(frozen=True)
class Extension:
    began: datetime  # when the silence began (kept by an extension)
    until: datetime
    capped: bool  # shorter than silence_for: silence_max from its start is reached


def extension(
    now: datetime, current: AlertSilence | None, settings: AlertSettings
) -> Extension | None:
    """Until when a press now silences, given the silence in force (None: it is already as
    long as silence_max allows)."""
    began = current.silenced_at if current is not None else now
    wanted = now + settings.silence_for
    until = min(wanted, began + settings.silence_max)
    if current is not None and until <= current.until:
        return None
    return Extension(began, until, capped=until < wanted)
