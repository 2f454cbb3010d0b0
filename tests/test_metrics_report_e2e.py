"""/health report end to end: the real bot reads the sample CSVs and uploads its chart."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, BotProcess, http_bot, write_config
from tests.support.health_reports import SLACK_ACK_DEADLINE_S, png_size, report_text
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.test_metrics_report import replace_line

SAMPLES = REPO / "metrics"


def report_bot(tmp: Path, slack: SlackFake, metrics_dir: Path) -> Iterator[BotProcess]:
    config = write_config(
        tmp / "eventmesh.yml", {"staging": "http://127.0.0.1:1"}, metrics={"dir": str(metrics_dir)}
    )
    return http_bot(tmp, slack, config)


def mapped_files(bot: BotProcess) -> str:
    """The shared objects the bot's process has loaded (an imported C extension shows here)."""
    return Path(f"/proc/{bot.process.pid}/maps").read_text()


def report_message(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    for message in fake.channel_messages(channel):
        if message.get("blocks") and "Metrics report" in message["text"]:
            return message
    return None


def test_the_report_shows_the_figures_and_uploads_the_chart(
    tmp_path: Path, slack: SlackFake
) -> None:
    with report_bot(tmp_path, slack, SAMPLES) as bot:
        # Idle, the bot has not loaded the plotting library; drawing a chart loads it.
        assert "/matplotlib/" not in mapped_files(bot)
        sent = bot.command("/health", "report")
        assert sent.response.status_code == 200
        assert sent.seconds < SLACK_ACK_DEADLINE_S
        channel = sent.channel
        files = slack.wait_for(lambda fake: fake.files_in(channel), timeout=30)
        assert "/matplotlib/" in mapped_files(bot)

    report = report_message(slack, channel)
    assert report is not None
    assert block_kit_errors(report["blocks"]) == []
    text = report_text(report)
    # The figures of tests/test_metrics_report.py's hand computation, as a person reads them.
    assert "Metrics report · last 10 builds" in text
    fields = text
    assert "31.4 min · Warning" in fields  # mean
    assert "39.6 min · Warning" in fields  # p95
    assert "41.8 min · Critical" in fields  # max
    assert "1 of 10" in fields  # failed builds
    assert "99.8% (12,149 of 12,179 tests passed)" in fields
    assert "79.6% (7,962 of 10,000 lookups hit)" in fields

    (chart,) = files
    assert chart["title"] == "Build durations · last 10 builds"
    assert chart["mimetype"] == "image/png"
    assert png_size(chart["content"]) == (800, 400)
    # files_upload_v2's three steps, in order, and the bytes arrived whole.
    methods = [c.method for c in slack.calls if c.method.startswith("files.")]
    assert methods[-2:] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert f"{chart['id']} 200 {chart['size']} bytes" in slack.upload_posts
    # The chart is shared in the channel after the report, as Slack shows it.
    assert [bool(m.get("files")) for m in slack.channel_messages(channel)] == [False, True]


def test_a_malformed_line_is_named_in_the_answer(tmp_path: Path, slack: SlackFake) -> None:
    metrics = tmp_path / "metrics"
    shutil.copytree(SAMPLES, metrics)
    replace_line(metrics / "cache_hits.csv", 9, "1036,870,lots")
    with report_bot(tmp_path, slack, metrics) as bot:
        sent = bot.command("/health", "report")
        answer = slack.wait_for(lambda fake: fake.channel_messages(sent.channel))
        log = bot.log.read_text()
    text = answer[0]["text"]
    assert f"{metrics / 'cache_hits.csv'} line 9: misses 'lots' is not a whole number" in text
    assert slack.files_in(sent.channel) == []
    assert "metrics report not made" in log and "ERROR" in log


@pytest.mark.parametrize("text", ["report 0", "report 1001", "report ten", "report 5 6"])
def test_bad_report_requests_get_usage(running_bot: BotProcess, text: str) -> None:
    sent = running_bot.command("/health", text)
    reply = sent.response.json()
    assert reply["response_type"] == "ephemeral"
    assert "/health report [N]" in reply["text"]
    assert running_bot.slack.channel_messages(sent.channel) == []
