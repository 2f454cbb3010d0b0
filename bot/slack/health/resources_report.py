"""/health <env> resources: the runbook's monitor_resources.sh as one message.

Without a duration, one snapshot of every host of the environment: CPU, memory, disk, load
and the top 5 processes by CPU, CPU and memory classed by the config's thresholds. With one,
a watch (long lane, Stop button) that takes a snapshot every check_interval, keeps the message
current with sparklines of CPU and memory, and ends with each host's min / mean / max.
"""

from __future__ import annotations

from bot.config import Environment, SshSettings, Thresholds
from bot.runbook.health.host_resources import (
    HostReading,
    HostSummary,
    ResourcesTally,
    Snapshot,
    Span,
    host_resources,
)
from bot.runbook.health.resources import ProcessUsage, Resources
from bot.runbook.health.watch import Watch, Watches
from bot.runbook.levels import Level
from bot.slack import blocks
from bot.slack.blocks import LEVEL_EMOJI, Block, context, duration_text, escape, header, section
from bot.slack.chat import Conversation, Message
from bot.slack.health.watch_blocks import clock_time, edit_spacing_s, ending, plural, stop_button
from bot.slack.live_message import LiveMessage
from bot.slack.sparkline import sparkline

SPARKLINE_WIDTH = 40
GIB = 1024**3


async def report_resources(
    conversation: Conversation,
    env: Environment,
    ssh: SshSettings,
    thresholds: Thresholds,
    *,
    requested_by: str,
) -> str:
    """One snapshot of the environment's hosts; returns its one-line summary."""
    async with host_resources(env, ssh, thresholds) as read:
        snapshot = await read()
    message = snapshot_message(env.name, snapshot, thresholds, requested_by=requested_by)
    await LiveMessage(conversation).finish(message)
    return message.text


async def watch_resources(
    conversation: Conversation,
    env: Environment,
    ssh: SshSettings,
    thresholds: Thresholds,
    watch: Watch,
    watches: Watches,
) -> str:
    """A snapshot every interval until the watch ends, then the summary; returns its line."""
    tally = ResourcesTally(thresholds)
    live = LiveMessage(conversation)
    try:
        async with host_resources(env, ssh, thresholds) as read:
            async for snapshot in watch.readings(read):
                tally.add(snapshot)
                live.min_interval_s = edit_spacing_s(len(watches))
                await live.show(running(watch, tally, thresholds))
    finally:
        watches.finished(watch)
    final = summary(watch, tally, thresholds)
    await live.finish(final)
    return final.text


# --- messages --------------------------------------------------------------------------------


def snapshot_message(
    env_name: str, snapshot: Snapshot, thresholds: Thresholds, *, requested_by: str
) -> Message:
    body: list[Block] = [header(f"Resources · {env_name}")]
    body += [section(_host_text(host)) for host in snapshot.hosts]
    body.append(
        context(
            f"Requested by <@{requested_by}> · {clock_time(snapshot.at)} · "
            f"{_thresholds_text(thresholds)}"
        )
    )
    return blocks.message(_snapshot_text(env_name, snapshot), body)


def running(watch: Watch, tally: ResourcesTally, thresholds: Thresholds) -> Message:
    latest = tally.latest
    assert latest is not None  # shown after each snapshot
    body: list[Block] = [header(f"Watching resources · {watch.environment}")]
    for host in latest.hosts:
        trend = (
            f"\nCPU `{_trend(tally.cpu[host.target])}`  "
            f"memory `{_trend(tally.memory[host.target])}`"
        )
        body.append(section(_host_text(host) + trend))
    body += [
        context(
            f"Started by <@{watch.started_by}> · every {duration_text(watch.interval)} until "
            f"{clock_time(watch.ends_at)} · snapshot {len(tally.snapshots)} of "
            f"{watch.expected_readings} · {_thresholds_text(thresholds)}"
        ),
        stop_button(watch),
    ]
    return blocks.message(_snapshot_text(watch.environment, latest), body)


def summary(watch: Watch, tally: ResourcesTally, thresholds: Thresholds) -> Message:
    how = ending(watch.stop_request)
    count = len(tally.snapshots)
    hosts = tally.summary()
    state = "stopped" if watch.stop_request else "done"
    body: list[Block] = [
        header(f"Resources watch of {watch.environment} · {state}"),
        section(f"*{count} snapshot{plural(count)}* of {len(hosts)} host{plural(len(hosts))}"),
    ]
    body += [section(_host_summary_text(host, tally)) for host in hosts]
    body.append(
        context(
            f"Started by <@{watch.started_by}> at {clock_time(watch.started_at)} · every "
            f"{duration_text(watch.interval)} for {duration_text(watch.duration)} · {how} · "
            f"{_thresholds_text(thresholds)}"
        )
    )
    peaks = "; ".join(_host_summary_line(host) for host in hosts)
    text = f"Resources watch of {watch.environment} {how}: {count} snapshot{plural(count)}" + (
        f"; {peaks}" if peaks else ""
    )
    return blocks.message(text, body)


def _host_text(host: HostReading) -> str:
    title = f"{LEVEL_EMOJI[host.level]} *{escape(host.target)}*"
    figures = host.resources
    if figures is None:
        return f"{title} — cannot be read: {escape(host.problem or 'no answer')}"
    assert host.cpu_level is not None and host.memory_level is not None
    load = " ".join(f"{value:.2f}" for value in figures.load_average)
    facts = [
        f"CPU {LEVEL_EMOJI[host.cpu_level]} {figures.cpu_percent:.1f}% of "
        f"{figures.cpu_count} CPU{plural(figures.cpu_count)}",
        f"memory {LEVEL_EMOJI[host.memory_level]} {figures.memory_percent:.1f}% "
        f"({figures.memory_used_bytes / GIB:.1f} of {figures.memory_total_bytes / GIB:.1f} GiB)",
        f"disk {figures.disk_percent:.1f}% of `{_inline(figures.disk_path)}` "
        f"({figures.disk_used_bytes / GIB:.1f} of {figures.disk_total_bytes / GIB:.1f} GiB)",
        f"load {load}",
    ]
    return f"{title} — " + " · ".join(facts) + "\n" + _processes(figures)


def _processes(figures: Resources) -> str:
    """The top processes by CPU as a small table (100% CPU is one whole CPU, as in top)."""
    rows = ["    PID   CPU%   MEM%  COMMAND"]
    rows += [_process_row(process) for process in figures.top_processes]
    return "```" + "\n".join(rows) + "```"


def _process_row(process: ProcessUsage) -> str:
    return (
        f"{process.pid:>7} {process.cpu_percent:>6.1f} {process.memory_percent:>6.1f}  "
        f"{_inline(process.name)}"
    )


def _inline(text: str) -> str:
    """Text from a host (a process name, a path) made inert inside code formatting."""
    return escape(" ".join(text.split()).replace("`", "'"))[:60]


def _trend(series: list[float | None]) -> str:
    return sparkline(series[-SPARKLINE_WIDTH:], low=0, high=100)


def _thresholds_text(thresholds: Thresholds) -> str:
    cpu, memory = thresholds.cpu_percent, thresholds.memory_percent
    return (
        f"CPU warning at {cpu.warning:g}%, critical over {cpu.critical:g}% · memory warning at "
        f"{memory.warning:g}%, critical over {memory.critical:g}%"
    )


def _host_summary_text(host: HostSummary, tally: ResourcesTally) -> str:
    worst = [span.peak_level for span in (host.cpu, host.memory) if span is not None]
    level = max(worst, key=lambda lv: lv.rank) if worst else Level.CRITICAL
    lines = [f"{LEVEL_EMOJI[level]} *{escape(host.target)}*"]
    lines.append(
        f"CPU {_span_text(host.cpu)} `{_trend(tally.cpu[host.target])}`"
        f"\nmemory {_span_text(host.memory)} `{_trend(tally.memory[host.target])}`"
    )
    if host.unreadable:
        lines.append(f"could not be read {host.unreadable} of {host.readings} times")
    return "\n".join(lines)


def _span_text(span: Span | None) -> str:
    if span is None:
        return "never read"
    return (
        f"min {span.minimum:.1f}% · mean {span.mean:.1f}% · max {span.maximum:.1f}% "
        f"({span.peak_level.value})"
    )


def _host_summary_line(host: HostSummary) -> str:
    if host.cpu is None or host.memory is None:
        return f"{host.target} never read"
    return (
        f"{host.target} CPU max {host.cpu.maximum:.1f}% ({host.cpu.peak_level.value}), "
        f"memory max {host.memory.maximum:.1f}% ({host.memory.peak_level.value})"
    )


def _snapshot_text(env_name: str, snapshot: Snapshot) -> str:
    parts = []
    for host in snapshot.hosts:
        figures = host.resources
        if figures is None:
            parts.append(f"{host.target} cannot be read")
            continue
        parts.append(
            f"{host.target} CPU {figures.cpu_percent:.1f}% ({host.cpu_level}), memory "
            f"{figures.memory_percent:.1f}% ({host.memory_level}), disk "
            f"{figures.disk_percent:.1f}%, load {figures.load_average[0]:.2f}"
        )
    return f"Resources of {env_name}: " + "; ".join(parts)
