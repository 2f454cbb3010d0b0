"""What a late message says about itself: when it was due, and why it is late.

A page that fell due while Slack was away goes out when Slack answers again — and says so, so
the person woken knows the incident has been waiting: "Due 14:02:05 UTC, delayed by a Slack
outage (HTTP 503); sent 14:03:37 UTC."
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.slack.blocks import context
from bot.slack.chat import Message
from bot.store import Delivery

LATE_AFTER = timedelta(seconds=10)
MAX_BLOCKS = 50  # Block Kit: a message's blocks


def why_late(row: Delivery, outage: str | None) -> str:
    if outage is not None:
        return f"delayed by a Slack outage ({outage})"
    if row.last_error:
        return f"delayed: Slack answered {row.last_error}"
    if row.created_at - row.due_at > LATE_AFTER:
        return "delayed: the bot was not running when it fell due"
    return "delayed: the bot was busy"


def late_note(message: Message, row: Delivery, now: datetime, outage: str | None) -> Message:
    """The message, with a line saying it is late if it goes out LATE_AFTER past due; `outage`
    is the cause of a Slack outage it waited through, if it did."""
    if now - row.due_at <= LATE_AFTER:
        return message
    line = f"Due {row.due_at:%H:%M:%S} UTC, {why_late(row, outage)}; sent {now:%H:%M:%S} UTC."
    text = f"{message.text} ({line[0].lower()}{line[1 : line.index(';')]})"
    if not message.blocks or len(message.blocks) >= MAX_BLOCKS:
        return Message(text, message.blocks)
    return Message(text, [*message.blocks, context(f":hourglass: {line}")])
