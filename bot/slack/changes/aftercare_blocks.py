"""Block Kit for the checks after a change, in the change's thread (and, for a rollback, the
alerts channel). After a deploy: it started, the first failure and the last word, with a
**Roll back** button while it fails. After a rollback (the runbook's follow-up checks): it
started, every check, a restart in the middle, a failing one's alert and its recovery, done.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.runbook.changes.activate import human_duration, show_version
from bot.runbook.health.health import Health, HealthResult
from bot.slack.blocks import HEALTH_EMOJI, button, escape, message, section
from bot.slack.changes.change_blocks import link, when
from bot.slack.chat import Message
from bot.store import Deployment

ROLL_BACK = "deploy_rollback"


def _said(text: str) -> Message:
    """One line, its emoji in the notification too."""
    return message(text, [section(text)])


# --- after a deploy ---------------------------------------------------------------------------


def deploy_checks_started(env: str, duration: str, interval: str) -> Message:
    return _said(
        f":eyes: Watching {env}'s health for {duration} after the deploy (a check every "
        f"{interval}); the result goes here."
    )


def deploy_unhealthy(
    env: str, deployment_id: int, reason: str, *, final: bool, checks: int, failures: int
) -> Message:
    if final:
        text = (
            f":red_circle: {env} after the deploy: {failures} of {checks} health checks failed "
            f"(last: {escape(reason)})."
        )
    else:
        text = f":red_circle: {env} is unhealthy after the deploy: {escape(reason)}."
    return message(
        text,
        [
            section(text),
            {
                "type": "actions",
                "block_id": f"watch_{deployment_id}",
                "elements": [button("Roll back", ROLL_BACK, str(deployment_id), "danger")],
            },
        ],
    )


def deploy_stayed_healthy(env: str, checks: int, duration: str, version: str | None) -> Message:
    on = f" on {escape(show_version(version))}" if version else ""
    counted = f"{checks} check{'s' if checks != 1 else ''}"
    return _said(
        f":white_check_mark: {env} stayed healthy{on} for {duration} after the deploy ({counted})."
    )


# --- after a rollback: the follow-up checks -------------------------------------------------


def followup_started(
    env: str, every: timedelta, until: datetime, total: int, alerts: str | None
) -> Message:
    also = f", and a failing one in <#{alerts}>" if alerts else ""
    return _said(
        f":eyes: Follow-up checks of {env}: one every {human_duration(every.total_seconds())} "
        f"until {when(until)} ({total} check{'s' if total != 1 else ''}). Each is posted "
        f"here{also}."
    )


def followup_check(
    number: int, total: int, result: HealthResult, failed: bool, reason: str
) -> Message:
    emoji = ":red_circle:" if failed else HEALTH_EMOJI.get(result.health, ":grey_question:")
    parts = [f"check {number} of {total}", when(result.checked_at), result.health.value]
    if result.latency_ms is not None:
        parts.append(f"{result.latency_ms:.0f} ms")
    if result.version:
        parts.append(show_version(result.version))
    text = f"{emoji} Follow-up " + " · ".join(parts)
    if failed or (result.health is not Health.HEALTHY and reason):
        text += f": {escape(reason)}"
    return _said(text)


def followup_resumed(missed: int, since: datetime, now: datetime, until: datetime) -> Message:
    lost = (
        f"{missed} check{'s' if missed != 1 else ''} fell due while it was down (from "
        f"{when(since)} to {when(now)}) and did not run"
        if missed
        else "no check was missed"
    )
    return _said(
        f":warning: The bot restarted during the follow-up checks: {lost}. They go on until "
        f"{when(until)}."
    )


def followup_turned(
    env: str, deployment: Deployment, number: int, total: int, reason: str | None
) -> Message:
    """For the alerts channel: a follow-up check starts failing (why), or passes again (None)."""
    checks = link(deployment.permalink, "The rollback and its checks")
    if reason is not None:
        text = (
            f":red_circle: *{env}* fails its follow-up check {number} of {total} after rollback "
            f"#{deployment.id}: {escape(reason)}. {checks}"
        )
        return message(
            f"{env} fails its follow-up checks after rollback #{deployment.id}", [section(text)]
        )
    text = (
        f":large_green_circle: *{env}* passes its follow-up checks again after rollback "
        f"#{deployment.id} (check {number} of {total}). {checks}"
    )
    return message(f"{env} passes its follow-up checks again", [section(text)])


def followup_done(text: str, failed: bool) -> Message:
    shown = f"{':red_circle:' if failed else ':white_check_mark:'} {escape(text)}"
    return message(text, [section(shown)])
