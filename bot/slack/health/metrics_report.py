"""/health report: the metrics report's message, and its chart shared beside it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bot.config import Threshold
from bot.runbook.health.metrics_chart import draw_build_chart
from bot.runbook.health.metrics_report import MetricsError, MetricsReport, Rate, read_metrics
from bot.runbook.levels import Level
from bot.slack import blocks
from bot.slack.blocks import LEVEL_EMOJI, context, escape, header, section, section_fields
from bot.slack.chat import Conversation, Message, Upload
from bot.slack.live_message import LiveMessage

log = logging.getLogger(__name__)


async def report_metrics(
    conversation: Conversation,
    directory: Path,
    builds: int,
    threshold: Threshold,
    *,
    requested_by: str,
) -> str:
    """Read the files, post the figures, then draw and share the chart; returns the summary."""
    live = LiveMessage(conversation)
    try:
        report = await asyncio.to_thread(read_metrics, directory, builds, threshold)
    except MetricsError as exc:
        log.error("metrics report not made: %s — fix the file (or metrics.dir in the config)", exc)
        failed = problem(exc)
        await live.finish(failed)
        return failed.text
    message = figures(report, requested_by=requested_by)
    await live.finish(message)
    png = await draw_build_chart(report)
    where = await conversation.upload(
        Upload(
            filename="build-durations.png",
            content=png,
            title=f"Build durations · last {_builds(len(report.builds))}",
        )
    )
    shared = f"; chart: {where}" if where else "; the chart could not be shared"
    return message.text + shared


def figures(report: MetricsReport, *, requested_by: str) -> Message:
    time = report.build_time
    count = len(report.builds)
    first, last = report.builds[0], report.builds[-1]
    short = (
        f" (asked for {report.requested}; the file has {count})" if count < report.requested else ""
    )
    body = [
        header(f"Metrics report · last {_builds(count)}"),
        section_fields(
            _figure("Build time, mean", time.mean, time.mean_level),
            _figure("Build time, p95", time.p95, time.p95_level),
            _figure("Build time, max", time.maximum, time.max_level),
            f"*Failed builds*\n{report.failed_builds} of {count}",
            f"*Test pass rate*\n{_rate(report.tests, 'tests passed', count)}",
            f"*Cache hit rate*\n{_rate(report.cache, 'lookups hit', count)}",
        ),
        context(
            f"Builds {escape(first.build_id)} ({first.started_at:%Y-%m-%d %H:%M}) to "
            f"{escape(last.build_id)} ({last.started_at:%Y-%m-%d %H:%M}){short} · build time "
            f"warning at {report.threshold.warning:g} min, critical over "
            f"{report.threshold.critical:g} min · requested by <@{requested_by}>"
        ),
    ]
    text = (
        f"Metrics report, last {_builds(count)}: build time mean {time.mean:.1f} min "
        f"({time.mean_level.value}), p95 {time.p95:.1f} min ({time.p95_level.value}), max "
        f"{time.maximum:.1f} min ({time.max_level.value}); {report.failed_builds} failed; "
        f"tests {_percent(report.tests)} passed; cache {_percent(report.cache)} hits"
    )
    return blocks.message(text, body)


def problem(error: MetricsError) -> Message:
    text = f"Metrics report not made: {error}"
    return blocks.message(text, [section(f":warning: {escape(text)}")])


def _figure(name: str, minutes: float, level: Level) -> str:
    return f"*{name}*\n{LEVEL_EMOJI[level]} {minutes:.1f} min · {level.value}"


def _percent(rate: Rate) -> str:
    share = rate.share
    if share is None:
        return "n/a"
    shown = f"{share * 100:.1f}%"
    # Rounding must not claim a perfect (or a nil) rate that was not.
    if shown == "100.0%" and rate.good < rate.total:
        return ">99.9%"
    if shown == "0.0%" and rate.good > 0:
        return "<0.1%"
    return shown


def _rate(rate: Rate, what: str, builds: int) -> str:
    if rate.share is None:
        return "no data for these builds"
    coverage = "" if rate.builds == builds else f", {rate.builds} of {builds} builds"
    return f"{_percent(rate)} ({rate.good:,} of {rate.total:,} {what}{coverage})"


def _builds(count: int) -> str:
    return f"{count} build{'' if count == 1 else 's'}"
