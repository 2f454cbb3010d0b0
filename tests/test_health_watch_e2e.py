"""/health <env> watch end to end: the real bot (1 s check_interval), the demo service, the fake.

Time in these tests is the config's second-scale check_interval; every wait is for something to
reach the Slack fake.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BotProcess, DemoService, http_bot, write_config
from tests.support.health_reports import (
    SLACK_ACK_DEADLINE_S,
    context_of,
    final_report,
    header_of,
    report_text,
    stop_value,
)
from tests.support.health_reports import first_message as watch_message
from tests.support.slack_fake import SlackFake, block_kit_errors

SUMMARY = re.compile(r"(\d+) readings? \((\d+) Healthy, (\d+) Degraded, (\d+) Unhealthy\)")


@pytest.fixture(scope="module")
def watch_bot(
    tmp_path_factory: pytest.TempPathFactory,
    slack: SlackFake,
    demo_services: tuple[DemoService, ...],
    dead_url: str,
) -> Iterator[BotProcess]:
    a, b = demo_services
    tmp = tmp_path_factory.mktemp("watch-bot")
    config = write_config(
        tmp / "eventmesh.yml",
        {"local": a.url, "dev": b.url, "staging": a.url, "production": dead_url},
        check_interval="1s",
    )
    with http_bot(tmp, slack, config) as bot:
        yield bot


@pytest.fixture
def bot(watch_bot: BotProcess, demo: DemoService) -> BotProcess:
    return watch_bot


def readings_shown(fake: SlackFake, channel: str) -> int:
    message = watch_message(fake, channel)
    found = re.search(r"reading (\d+) of", context_of(message)) if message else None
    return int(found.group(1)) if found else 0


def summary_of(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    message = watch_message(fake, channel)
    return message if message and header_of(message).startswith("Watch of") else None


def test_a_watch_is_one_message_that_follows_a_change_and_sums_it_up(
    bot: BotProcess, demo: DemoService
) -> None:
    sent = bot.command("/health", "staging watch 10s", user_id="U0WATCHER")
    assert sent.response.status_code == 200
    assert sent.seconds < SLACK_ACK_DEADLINE_S
    channel = sent.channel
    bot.slack.wait_for(lambda fake: readings_shown(fake, channel) >= 3)
    running = watch_message(bot.slack, channel)
    assert running is not None
    assert header_of(running) == "Watching staging"
    assert "Healthy" in report_text(running) and "no failures" in report_text(running)
    assert block_kit_errors(running["blocks"]) == []

    demo.set_faults(latency_ms=600)  # mid-watch: slow, so Degraded by the runbook's rules
    final = bot.slack.wait_for(lambda fake: summary_of(fake, channel), timeout=30)
    text = report_text(final)
    assert header_of(final) == "Watch of staging · done"
    assert block_kit_errors(final["blocks"]) == []
    assert not any(b["type"] == "actions" for b in final["blocks"])  # no Stop once it is over

    found = SUMMARY.search(final["text"])
    assert found is not None, final["text"]
    readings, healthy, degraded, unhealthy = map(int, found.groups())
    # Every Healthy reading is one /healthz request to the service; a Degraded one, slow and
    # nothing else, two (the second confirms it: second_reading in bot/runbook/health/health.py).
    checks = [r for r in demo.requests() if r["path"] == "/healthz"]
    assert healthy >= 3 and degraded >= 1 and unhealthy == 0
    assert healthy + degraded == readings
    assert healthy + 2 * degraded == len(checks)
    # 10 ticks in 10 s; a tick overrun by a check is skipped: a slow one (two requests of
    # 600 ms, one after the other) overruns one.
    assert 8 <= healthy + 2 * degraded <= 11
    assert "Healthy → Degraded" in final["text"] and "Healthy → Degraded" in text
    assert "ran its full time" in final["text"]
    assert "0 failures" in final["text"]
    latency = re.search(r"latency min/median/max (\d+)/(\d+)/(\d+) ms", final["text"])
    assert latency is not None and int(latency.group(3)) >= 600
    assert "<@U0WATCHER>" in context_of(final)

    # One message, edited in place: one post, every update to its ts.
    posts = [c for c in bot.slack.calls_to("chat.postMessage") if c.args["channel"] == channel]
    updates = [c for c in bot.slack.calls_to("chat.update") if c.args["channel"] == channel]
    assert len(posts) == 1 and len(updates) >= 2
    assert {u.args["ts"] for u in updates} == {final["ts"]}


def test_stop_ends_a_watch_early_and_says_who_and_when(bot: BotProcess) -> None:
    sent = bot.command("/health", "staging watch 1h")
    channel = sent.channel
    first = bot.slack.wait_for(lambda fake: watch_message(fake, channel))
    pressed = bot.press(
        "watch_stop",
        stop_value(first),
        channel=channel,
        message_ts=first["ts"],
        user_id="U0DEPLOY1",  # a responder; not its starter (issue 16: not just anyone)
    )
    assert pressed.response.status_code == 200
    assert pressed.seconds < SLACK_ACK_DEADLINE_S
    final = bot.slack.wait_for(lambda fake: summary_of(fake, channel))
    assert header_of(final) == "Watch of staging · stopped"
    assert re.search(r"stopped by <@U0DEPLOY1> at \d\d:\d\d:\d\d UTC", final["text"])
    assert SUMMARY.search(final["text"])

    # The watch is gone: a second press says so, privately, and changes nothing.
    responses_before = len(bot.slack.responses)
    again = bot.press("watch_stop", stop_value(first), channel=channel, message_ts=first["ts"])
    assert again.response.status_code == 200
    reply = bot.slack.wait_for(
        lambda fake: [r for r in fake.responses[responses_before:] if "already ended" in r["text"]]
    )
    assert reply[0]["response_type"] == "ephemeral"
    assert summary_of(bot.slack, channel) == final


def report_seconds(bot: BotProcess) -> tuple[float, str]:
    """Send /health staging; seconds from sending to its complete report reaching Slack."""
    started = time.monotonic()
    sent = bot.command("/health", "staging")
    report = final_report(bot.slack, sent.channel)
    (update,) = [
        c
        for c in bot.slack.calls_to("chat.update")
        if c.args["channel"] == sent.channel and c.args["ts"] == report["ts"]
    ]
    return update.at - started, report_text(report)


@pytest.mark.serial
def test_twenty_watches_do_not_delay_another_commands_report(
    bot: BotProcess, demo: DemoService
) -> None:
    # Every check takes a second, so a report is "about its check's time" when near 1 s.
    demo.set_faults(latency_ms=1000)
    idle, _ = report_seconds(bot)

    channels = [bot.command("/health", "staging watch 10m").channel for _ in range(20)]
    bot.slack.wait_for(lambda fake: all(watch_message(fake, c) for c in channels), timeout=30)

    loaded, text = report_seconds(bot)
    assert "*staging* — Degraded" in text
    # Still all twenty running when the report was complete: it did not wait for any of them.
    assert not any(summary_of(bot.slack, c) for c in channels)
    # Had the watches taken the short lane's workers, this report would wait minutes.
    assert loaded < 2 * idle, f"idle {idle:.2f} s, with twenty watches {loaded:.2f} s"

    for channel in channels:
        message = watch_message(bot.slack, channel)
        assert message is not None
        bot.press("watch_stop", stop_value(message), channel=channel, message_ts=message["ts"])
    finals = bot.slack.wait_for(
        lambda fake: all(summary_of(fake, c) for c in channels) and channels, timeout=30
    )
    assert finals
    for channel in channels:
        final = summary_of(bot.slack, channel)
        assert final is not None and "stopped by <@U0USER>" in final["text"]


@pytest.mark.parametrize(
    "text",
    ["all watch", "staging watch 2h", "staging watch 10", "staging watch 10s now", "nosuch watch"],
)
def test_bad_watch_requests_get_usage_and_start_nothing(bot: BotProcess, text: str) -> None:
    sent = bot.command("/health", text)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert "Usage" in reply["text"] and "/health <env> watch [duration]" in reply["text"]
    barrier = bot.command("/health", "staging")
    final_report(bot.slack, barrier.channel)
    assert bot.slack.channel_messages(sent.channel) == []


def test_stopping_the_bot_ends_its_watches_with_a_summary(
    tmp_path: Path, slack: SlackFake, demo: DemoService
) -> None:
    config = write_config(tmp_path / "eventmesh.yml", {"staging": demo.url}, check_interval="1s")
    with http_bot(tmp_path, slack, config) as bot:
        sent = bot.command("/health", "staging watch 1h")
        slack.wait_for(lambda fake: watch_message(fake, sent.channel))
    # http_bot stopped the bot with SIGTERM and checked it exited 0.
    final = summary_of(slack, sent.channel)
    assert final is not None
    assert "the bot was shutting down" in final["text"]
