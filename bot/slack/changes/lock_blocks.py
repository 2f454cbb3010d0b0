"""Block Kit for environment locks: who holds one (a run, or someone by hand), a refusal
because of it, and the confirmation before freeing someone else's."""

from __future__ import annotations

from bot.slack.blocks import button, escape, message, section
from bot.slack.changes.change_blocks import day_and_time, link
from bot.slack.chat import Message
from bot.store import Deployment, EnvironmentLock

UNLOCK_CONFIRM = "deploy_unlock_confirm"
UNLOCK_FORCE = "deploy_unlock_force"


def lock_holder(lock: EnvironmentLock) -> str:
    """'locked by @X since 12:00 UTC (deploy #12, its message)' in mrkdwn."""
    since = day_and_time(lock.acquired_at)
    if lock.kind == "manual":
        reason = f": {escape(lock.reason)}" if lock.reason else ""
        return f"held by hand by <@{lock.holder}> since {since}{reason}"
    what = f"{lock.kind} #{lock.deployment_id}" if lock.deployment_id else lock.kind
    where = (
        link(lock.permalink, "its message")
        if lock.permalink
        else (f"its message in <#{lock.channel}>" if lock.channel else "its message")
    )
    return f"locked by <@{lock.holder}>'s {what} since {since} ({where})"


def locked(env: str, lock: EnvironmentLock, asked: str) -> Message:
    text = f":lock: {env} is {lock_holder(lock)}, so your {asked} did not start."
    fallback = f"{env} is locked by {lock.holder} since {day_and_time(lock.acquired_at)}"
    return message(fallback, [section(text)])


def unlock_confirm(env: str, lock: EnvironmentLock) -> Message:
    text = (
        f":warning: {env} is {lock_holder(lock)}. Free it anyway? Everyone in this channel "
        "will be told, and so will the holder."
    )
    return message(
        f"{env} is held by {lock.holder}: free it anyway?",
        [
            section(text),
            {
                "type": "actions",
                "block_id": "unlock_confirm",
                "elements": [
                    button("Free it", UNLOCK_CONFIRM, f"{env}:{lock.token}", "danger"),
                ],
            },
        ],
    )


def force_confirm(env: str, lock: EnvironmentLock, run: Deployment, why_dead: str) -> Message:
    """Before an approver frees a lock whose run has no task any more."""
    text = (
        f":warning: {env} is {lock_holder(lock)}, and nothing runs it any more: {why_dead}. "
        f"Freeing it marks {run.kind} #{run.id} interrupted (its hosts are inspected, as "
        "after a crash) and tells the channel. Free it?"
    )
    return message(
        f"{env}: free the lock of {run.kind} #{run.id}, whose run is dead?",
        [
            section(text),
            {
                "type": "actions",
                "block_id": "unlock_force",
                "elements": [
                    button("Free it", UNLOCK_FORCE, f"{env}:{lock.token}", "danger"),
                ],
            },
        ],
    )
