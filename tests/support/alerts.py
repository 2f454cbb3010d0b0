"""Threshold alerts in tests: a config whose scheduled checks run every second, and reading the
alerts back out of the Slack fake as a person in the alerts channel would."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import DemoService
from tests.support.incident_messages import shown
from tests.support.slack_fake import ApiCall, SlackFake

ONCALL = "U0ONCALL"
CONSOLE_USER = "UCONSOLE"
# CPU and memory of this (shared, busy) machine are not what these tests are about.
UNREACHABLE = {"warning": 100.5, "critical": 101}


def alerts_config(
    path: Path,
    environments: dict[str, str],
    *,
    alerts_channel: str,
    incidents_channel: str,
    check_interval: str = "1s",
    alerts: dict[str, Any] | None = None,
    thresholds: dict[str, Any] | None = None,
    **sections: Any,
) -> Path:
    """Environments (transport local) checked every check_interval, alerting in alerts_channel,
    paging one on-call person through incidents_channel."""
    config: dict[str, Any] = {
        "slack": {"alerts_channel": alerts_channel, "incidents_channel": incidents_channel},
        "environments": {
            name: {"base_url": url, "transport": "local", "check_interval": check_interval}
            for name, url in environments.items()
        },
        "thresholds": {
            "cpu_percent": UNREACHABLE,
            "memory_percent": UNREACHABLE,
            **(thresholds or {}),
        },
        "alerts": {
            "breaches_to_fire": 2,
            "passes_to_resolve": 2,
            "repeat_every": "1h",
            "page_on_critical": True,
            **(alerts or {}),
        },
        "escalation": {"levels": [{"name": "On-call DevOps Engineer", "users": [ONCALL]}]},
        # The console's user may press the alerts' buttons (issue 16: responders only).
        "access": {"deployers": [CONSOLE_USER]},
        "metrics": {"dir": str(path.parent / "no-metrics-here")},
        **sections,
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def alert_posts(slack: SlackFake, channel: str) -> list[ApiCall]:
    """The alert messages posted in channel (not their thread lines), in order."""
    return [
        call
        for call in slack.calls_to("chat.postMessage")
        if call.args.get("channel") == channel
        and not call.args.get("thread_ts")
        and call.error is None
    ]


def posted(slack: SlackFake, channel: str, words: str) -> dict[str, Any] | None:
    """The first message in channel (thread lines included) whose text has words."""
    for message in slack.channel_messages(channel):
        if words in shown(message):
            return message
    return None


def alert_in(slack: SlackFake, channel: str, words: str) -> dict[str, Any] | None:
    """The alert message (not a thread line) in channel that reads words now."""
    for message in slack.channel_messages(channel):
        if "thread_ts" not in message and words in shown(message):
            return message
    return None


def thread(slack: SlackFake, channel: str, ts: str) -> list[str]:
    """The lines in a message's thread, in order."""
    return [
        shown(message)
        for message in slack.channel_messages(channel)
        if message.get("thread_ts") == ts
    ]


def updates(slack: SlackFake, channel: str, ts: str) -> list[ApiCall]:
    return [
        call
        for call in slack.calls_to("chat.update")
        if call.args.get("channel") == channel and call.args.get("ts") == ts
    ]


def served(
    demo: DemoService, path: str, count: int, *, since: float = 0.0, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Wait until the service has answered `count` requests to path (started after `since`,
    time.time()); returns them. Polls the service's request log: a condition, not a time."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in demo.requests() if r["path"] == path and r["started"] >= since]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{demo.url}{path}: {len(found)} of {count} requests served")
        time.sleep(0.05)
