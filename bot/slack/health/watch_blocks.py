"""What every watch's message has: the Stop button, the times, how it ended, the edit budget."""

from __future__ import annotations

from datetime import datetime

from bot.runbook.health.watch import StopRequest, Watch
from bot.slack import blocks
from bot.slack.blocks import Block

STOP_ACTION = "watch_stop"
# Slack allows chat.update about 50 times a minute (Tier 3). Watches share a budget below it:
# with n running, each shows a reading at most every n * 60 / budget seconds (the final
# summary always goes out). One watch shows every reading (at most every 1.5 s); twenty,
# every 30 s; fifty, every 75 s.
EDITS_PER_MINUTE = 40


def edit_spacing_s(running_watches: int) -> float:
    """The least time between two progress edits of one watch's message."""
    return max(1.0, running_watches * 60 / EDITS_PER_MINUTE)


def stop_button(watch: Watch) -> Block:
    return {
        "type": "actions",
        "block_id": "watch_actions",
        "elements": [blocks.button("Stop", STOP_ACTION, watch.id, style="danger")],
    }


def clock_time(at: datetime) -> str:
    return f"{at:%H:%M:%S} UTC"


def ending(stop: StopRequest | None) -> str:
    """How the watch ended, for its summary."""
    if stop is None:
        return "ran its full time"
    if stop.by is None:
        return f"ended early at {clock_time(stop.at)}: the bot was shutting down"
    return f"stopped by <@{stop.by}> at {clock_time(stop.at)}"


def plural(n: int) -> str:
    return "" if n == 1 else "s"
