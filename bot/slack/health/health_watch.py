"""/health <env> watch: the runbook's monitor_health.sh as one message updated in place.

Every check_interval the environment is checked again and the message shows the class, the
latest latency, the consecutive failures and a sparkline of the latencies; when the watch
ends (its time is up, someone pressed Stop, or the bot is stopping) the message becomes the
summary. The work runs in the workers' long lane, so any number of watches leave the short
lane free for everyone else's reports.
"""

from __future__ import annotations

from bot.config import Environment
from bot.runbook.health.health import Health, HealthChecker
from bot.runbook.health.watch import HealthChange, HealthSummary, HealthTally, Watch, Watches
from bot.slack import blocks
from bot.slack.blocks import Block, context, duration_text, escape, header, section
from bot.slack.chat import Conversation, Message
from bot.slack.health.watch_blocks import clock_time, edit_spacing_s, ending, plural, stop_button
from bot.slack.live_message import LiveMessage
from bot.slack.sparkline import sparkline

SPARKLINE_WIDTH = 60  # the latest readings; a section line stays short on a phone
CHANGES_SHOWN = 20


async def watch_health(
    conversation: Conversation,
    checker: HealthChecker,
    env: Environment,
    watch: Watch,
    watches: Watches,
) -> str:
    """Run the watch to its end and keep its message current; returns the summary line."""
    tally = HealthTally()
    live = LiveMessage(conversation)
    try:
        async for result in watch.readings(lambda: checker.check(env)):
            tally.add(result)
            live.min_interval_s = edit_spacing_s(len(watches))
            await live.show(running(watch, tally, checker.thresholds.health_response_ms.warning))
    finally:
        watches.finished(watch)
    final = summary(watch, tally)
    await live.finish(final)
    return final.text


def running(watch: Watch, tally: HealthTally, warning_ms: float) -> Message:
    """The message while the watch runs: the latest reading and the history as a sparkline."""
    latest = tally.latest
    assert latest is not None  # shown after each reading
    facts = [f"*{latest.health.value}*"]
    facts.append(f"{latest.latency_ms:.0f} ms" if latest.latency_ms is not None else "no answer")
    failures = tally.consecutive_failures
    facts.append(
        "no failures" if failures == 0 else f"{failures} consecutive failure{plural(failures)}"
    )
    status = f"{blocks.HEALTH_EMOJI[latest.health]} " + " · ".join(facts)
    if latest.reason and latest.health is not Health.HEALTHY:
        status += f"\n        › {escape(latest.reason)}"
    latencies = tally.latencies()
    shown = latencies[-SPARKLINE_WIDTH:]
    answered = [v for v in shown if v is not None]
    span = f"{min(answered):.0f}–{max(answered):.0f} ms" if answered else "no answers"
    count = f"{len(shown)} reading{plural(len(shown))}"
    trend = f"`{sparkline(shown)}`  latency of the last {count}: {span}"
    body: list[Block] = [
        header(f"Watching {watch.environment}"),
        section(status),
        section(trend),
        context(
            f"Started by <@{watch.started_by}> · every {duration_text(watch.interval)} until "
            f"{clock_time(watch.ends_at)} · reading {len(tally.readings)} of "
            f"{watch.expected_readings} · slow at {warning_ms:.0f} ms, `·` is no answer"
        ),
        stop_button(watch),
    ]
    text = (
        f"Watching {watch.environment}: {latest.health.value}"
        + (f", {latest.latency_ms:.0f} ms" if latest.latency_ms is not None else ", no answer")
        + f", {failures} consecutive failure{plural(failures)}"
    )
    return blocks.message(text, body)


def summary(watch: Watch, tally: HealthTally) -> Message:
    """The final message: what the whole watch saw, and how it ended."""
    result = tally.summary()
    how = ending(watch.stop_request)
    counts = " · ".join(
        f"{blocks.HEALTH_EMOJI[health]} {result.counts[health]} {health.value}" for health in Health
    )
    body: list[Block] = [
        header(f"Watch of {watch.environment} · {'stopped' if watch.stop_request else 'done'}"),
        section(f"*{result.readings} reading{plural(result.readings)}* · {counts}"),
        section(_latency_line(result, tally)),
        section(
            f"*Failures* {result.failures}"
            + (f" · longest run {result.longest_failure_run}" if result.failures else "")
        ),
        *blocks.sections_for_lines(_change_lines(result, tally)),
        context(
            f"Started by <@{watch.started_by}> at {clock_time(watch.started_at)} · every "
            f"{duration_text(watch.interval)} for {duration_text(watch.duration)} · {how}"
        ),
    ]
    return blocks.message(_summary_text(watch, result, how), body)


def _latency_line(result: HealthSummary, tally: HealthTally) -> str:
    if result.latency is None:
        return "*Latency* no reading was answered"
    stats = result.latency
    shown = tally.latencies()[-SPARKLINE_WIDTH:]
    return (
        f"*Latency* min {stats.minimum:.0f} ms · median {stats.median:.0f} ms · "
        f"max {stats.maximum:.0f} ms  `{sparkline(shown)}`"
    )


def _change_lines(result: HealthSummary, tally: HealthTally) -> list[str]:
    if tally.latest is None:
        return ["*No reading* was taken"]
    if not result.changes:
        return [f"*Changes of state* none: {tally.latest.health.value} throughout"]
    lines = [f"*Changes of state* ({len(result.changes)})"]
    lines += [_change(c) for c in result.changes[:CHANGES_SHOWN]]
    if len(result.changes) > CHANGES_SHOWN:
        lines.append(f"… and {len(result.changes) - CHANGES_SHOWN} more")
    return lines


def _change(change: HealthChange) -> str:
    return (
        f"{clock_time(change.at)}  {blocks.HEALTH_EMOJI[change.after]} "
        f"{change.before.value} → {change.after.value}"
    )


def _summary_text(watch: Watch, result: HealthSummary, how: str) -> str:
    counts = ", ".join(f"{result.counts[h]} {h.value}" for h in Health)
    if result.latency is None:
        latency = "no answers"
    else:
        stats = result.latency
        latency = (
            f"latency min/median/max {stats.minimum:.0f}/{stats.median:.0f}/{stats.maximum:.0f} ms"
        )
    changes = "; ".join(
        f"{c.before.value} → {c.after.value} at {clock_time(c.at)}" for c in result.changes[:5]
    )
    n = len(result.changes)
    return (
        f"Watch of {watch.environment} {how}: {result.readings} reading{plural(result.readings)} "
        f"({counts}), {latency}, {result.failures} failure{plural(result.failures)}, "
        + (f"{n} change{plural(n)}: {changes}" if n else "no change")
    )
