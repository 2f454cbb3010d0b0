"""The /health <env> diagnose message: the verdict on top, the bot's own check, each host.

Up to DETAILED hosts are shown in full (process, port, local healthz, log, disk, memory,
load); with more, the hosts with findings come first in full and every host gets one line.
The buttons (Logs, Roll back, Restart service) come once every host has answered.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.runbook.health.diagnose import Diagnosis
from bot.runbook.health.diagnosis_probe import HostDiagnosis, LocalHealth, PortCheck
from bot.runbook.health.health import HealthResult
from bot.runbook.health.log_lines import Kind, LogTally
from bot.runbook.health.verdict import Finding
from bot.runbook.levels import Level
from bot.slack import blocks
from bot.slack.blocks import (
    HEALTH_EMOJI,
    LEVEL_EMOJI,
    MAX_BLOCKS,
    PENDING_EMOJI,
    Block,
    button,
    context,
    escape,
    header,
    section,
    sections_within,
)
from bot.slack.chat import Message

LOGS_ACTION = "diagnose_logs"
ROLL_BACK_ACTION = "diagnose_rollback"
RESTART_ACTION = "diagnose_restart"
DETAILED = 5  # hosts shown in full when there are more than this
COUNTS_SHOWN = 6  # types counted per host
MIB = 1024**2
GIB = 1024**3


def diagnosis_message(diagnosis: Diagnosis, *, requested_by: str, seconds: float) -> Message:
    env = diagnosis.env.name
    answered = len(diagnosis.answered)
    total = len(diagnosis.hosts)
    found = diagnosis.findings()
    body: list[Block] = [header(f"Diagnosis · {env}"), section(_verdict(diagnosis, found))]
    body.append(section(_bot_check(diagnosis.bot_check, diagnosis.env.healthz_url)))
    hosts = list(zip(diagnosis.targets, diagnosis.hosts, strict=True))
    room = MAX_BLOCKS - len(body) - 2  # the context and the buttons
    body += _host_blocks(hosts, room)
    spec = diagnosis.spec
    took = f" · took {seconds:.1f}s" if diagnosis.done else ""
    body.append(
        context(
            f"Requested by <@{requested_by}> · process `{_inline(spec.process)}` · log "
            f"`{_inline(spec.log_file)}` (last {spec.log_lines:,} lines) · port {spec.port} · "
            f"{answered} of {total} host{_s(total)} answered, 5 at a time{took}"
        )
    )
    if diagnosis.done:
        body.append(
            {
                "type": "actions",
                "block_id": "diagnose_actions",
                "elements": [
                    button("Logs", LOGS_ACTION, env),
                    button("Roll back", ROLL_BACK_ACTION, env, style="danger"),
                    button("Restart service", RESTART_ACTION, env),
                ],
            }
        )
    return blocks.message(_fallback(diagnosis, found), body)


def _verdict(diagnosis: Diagnosis, found: Sequence[Finding]) -> str:
    answered, total = len(diagnosis.answered), len(diagnosis.hosts)
    title = "*Verdict*" if diagnosis.done else f"*Verdict so far* ({answered} of {total} hosts)"
    if not found:
        if not diagnosis.done:
            return f"{title}\n{PENDING_EMOJI} nothing found yet"
        return (
            f"{title}\n{LEVEL_EMOJI[Level.NORMAL]} No runbook common issue fits: the service "
            f"runs, holds port {diagnosis.spec.port} and answers healthz on every host."
        )
    lines = [title]
    for finding in found:
        source = "" if finding.runbook else " (not one of the runbook's)"
        lines.append(
            f"{LEVEL_EMOJI[finding.level]} *{escape(finding.issue)}*{source} → "
            f"{escape(finding.detail)}\n        *Next*: {escape(finding.next_step)}"
        )
    return "\n".join(lines)


def _bot_check(result: HealthResult | None, url: str) -> str:
    if result is None:
        return f"*From the bot* ({escape(url)}): {PENDING_EMOJI} checking…"
    facts = [result.health.value]
    if result.latency_ms is not None:
        facts.append(f"{result.latency_ms:.0f} ms")
    facts += [escape(reason) for reason in result.reasons[:2]]
    return f"*From the bot* ({escape(url)}): {HEALTH_EMOJI[result.health]} " + " · ".join(facts)


def _host_blocks(hosts: list[tuple[str, HostDiagnosis | None]], room: int) -> list[Block]:
    answered = [host for _, host in hosts if host is not None]
    pending = len(hosts) - len(answered)
    waiting = [context(f"{PENDING_EMOJI} {pending} host{_s(pending)} still to answer")]
    if len(hosts) <= DETAILED:
        shown = [section(host_text(host)) for host in answered]
        return shown + (waiting if pending else [])
    worst = sorted(answered, key=lambda host: -_ORDER[host_level(host)])
    detailed = [h for h in worst if host_level(h) is not Level.NORMAL][: DETAILED - 2]
    lines = [_host_line(host) for host in worst]
    blocks_ = [section(host_text(host)) for host in detailed]
    room -= len(blocks_) + (1 if pending else 0)
    blocks_ += sections_within(lines, max(room, 1), lambda n: f"… and {n} more hosts")
    return blocks_ + (waiting if pending else [])


_ORDER = {Level.NORMAL: 0, Level.WARNING: 1, Level.CRITICAL: 2}


def host_level(host: HostDiagnosis) -> Level:
    """Critical: unreachable, not running, healthz failing on the host; warning: log errors."""
    if host.problem is not None or host.running is False:
        return Level.CRITICAL
    if host.local is not None and host.local.tool is not None and not host.local.ok:
        return Level.CRITICAL
    log = host.log
    if log is None or log.problem or (log.tally and log.tally.total(Kind.PANIC, Kind.ERROR)):
        return Level.WARNING
    return Level.NORMAL


def host_text(host: HostDiagnosis) -> str:
    title = f"{LEVEL_EMOJI[host_level(host)]} *{escape(host.target)}*"
    if host.problem is not None:
        return f"{title} — cannot be diagnosed: {escape(host.problem)}"
    lines = [
        f"{title} · answered in {host.seconds:.1f}s",
        f"• *Process*: {_processes(host)}",
        f"• *Port*: {_port(host.port, host)}",
        f"• *healthz on the host*: {_local(host.local)}",
        f"• *Log*: {_log(host)}",
        f"• {_resources(host)}",
    ]
    log = host.log
    if log is not None and log.tally is not None:
        last = log.last_lines if host.running is False else log.last_errors
        which = "its last lines" if host.running is False else "the last error lines"
        if last:
            lines.append(f"  {which}:\n```" + "\n".join(escape(line) for line in last) + "```")
    return "\n".join(lines)


def _processes(host: HostDiagnosis) -> str:
    if host.processes is None:
        return f"cannot tell: {escape(host.process_problem or 'no answer')}"
    if not host.processes:
        return ":red_circle: *not running*"
    first = host.main_process
    assert first is not None
    text = (
        f"pid {first.pid} · up {_age(first.uptime_s)} · RSS {_mib(first.rss_bytes)} · "
        f"CPU {first.cpu_percent:.1f}% (average since start) · `{_inline(first.command)}`"
    )
    others = [p for p in host.processes if p is not first]
    if others:
        pids = ", ".join(str(p.pid) for p in others[:5])
        text += f" (and {len(others)} more: {pids})"
    port = host.port
    on_port = port is not None and any(x.pid == first.pid for x in port.listeners)
    if port is not None and port.tool is not None and not on_port:
        text += f" · none of {'them' if others else 'it'} on port {port.port}"
    return text


def _port(port: PortCheck | None, host: HostDiagnosis) -> str:
    if port is None or port.problem is not None:
        problem = port.problem if port is not None else "no answer"
        return f"cannot tell who holds it: {escape(problem or '')}"
    if not port.listeners:
        return f"nothing listens on {port.port} ({port.tool})"
    holders = []
    for listener in port.listeners:
        if listener.pid is None:
            holders.append(f"a process the SSH user may not see ({escape(listener.address)})")
        elif listener.pid in host.service_pids:
            holders.append(f"the service, pid {listener.pid}")
        else:
            holders.append(
                f":warning: pid {listener.pid} `{_inline(listener.name or '?')}` — not the service"
            )
    return f"{port.port} held by " + "; ".join(dict.fromkeys(holders)) + f" ({port.tool})"


def _local(local: LocalHealth | None) -> str:
    if local is None:
        return "no answer"
    if local.tool is None:
        return f"cannot ask: {escape(local.problem or '')}"
    where = f"`{_inline(local.url)}` with {local.tool}"
    if local.status is None:
        return f"{LEVEL_EMOJI[Level.CRITICAL]} no answer: {escape(local.problem or '')} ({where})"
    took = f" in {local.seconds * 1000:.0f} ms" if local.seconds is not None else ""
    level = Level.NORMAL if local.ok else Level.CRITICAL
    return f"{LEVEL_EMOJI[level]} HTTP {local.status}{took} ({where})"


def _log(host: HostDiagnosis) -> str:
    log = host.log
    if log is None:
        return "no answer"
    path = f"`{_inline(log.path)}`"
    if log.problem is not None or log.tally is None:
        return f":warning: {path} {escape(log.problem or 'not read')}"
    cut = " (only the last 900 KB)" if log.cut else ""
    lines = log.tally.lines
    read = f"the last {lines:,} line{_s(lines)}" if lines else "empty"
    return f"{path}, {read}{cut}: {counts_text(log.tally)}"


def counts_text(tally: LogTally) -> str:
    """'12 errors · 3 warnings · 0 panics — `ERROR ConnectionRefused` ×7 · …'."""
    totals = " · ".join(
        f"{tally.total(kind):,} {name}{_s(tally.total(kind))}"
        for kind, name in ((Kind.PANIC, "panic"), (Kind.ERROR, "error"), (Kind.WARNING, "warning"))
    )
    if not tally.counts:
        return totals
    types = " · ".join(
        f"`{count.kind.label} {_inline(count.type)}` ×{count.count:,}"
        for count in tally.counts[:COUNTS_SHOWN]
    )
    more = len(tally.counts) - COUNTS_SHOWN
    return f"{totals} — {types}" + (f" · {more} more types" if more > 0 else "")


def _resources(host: HostDiagnosis) -> str:
    parts = []
    for disk in host.disks:
        if disk.percent is None:
            parts.append(f"*{disk.role} disk* cannot tell ({escape(disk.problem or '')})")
        else:
            parts.append(
                f"*{disk.role} disk* {disk.percent:.0f}% of `{_inline(disk.path)}` "
                f"({disk.used_bytes / GIB:.1f} of {disk.total_bytes / GIB:.1f} GiB)"
            )
    memory = host.memory
    if memory is not None:
        parts.append(
            f"*memory* {memory.percent:.0f}% ({memory.used_bytes / GIB:.1f} of "
            f"{memory.total_bytes / GIB:.1f} GiB)"
        )
    if host.load is not None:
        cpus = f" on {host.cpus} CPU{_s(host.cpus)}" if host.cpus else ""
        parts.append("*load* " + " ".join(f"{x:.2f}" for x in host.load) + cpus)
    return " · ".join(parts) or "resources: no answer"


def _host_line(host: HostDiagnosis) -> str:
    """One line per host, for environments with many."""
    title = f"{LEVEL_EMOJI[host_level(host)]} *{escape(host.target)}*"
    if host.problem is not None:
        return f"{title} — cannot be diagnosed: {escape(host.problem)}"
    facts = []
    if host.processes is not None:
        main = host.main_process
        facts.append(f"running (pid {main.pid})" if main is not None else "not running")
    if host.port is not None and host.port.problem is None:
        others = host.others_on_port
        if others:
            facts.append(f"port held by pid {others[0].pid} `{_inline(others[0].name or '?')}`")
        elif not host.port.listeners:
            facts.append("nothing on the port")
    if host.local is not None and host.local.tool is not None:
        facts.append(f"healthz {host.local.status}" if host.local.status else "healthz no answer")
    log = host.log
    if log is not None and log.tally is not None:
        errors = log.tally.total(Kind.PANIC, Kind.ERROR)
        facts.append(f"{errors:,} error{_s(errors)} in the log")
    elif log is not None and log.problem:
        facts.append(f"log {escape(log.problem)}")
    return f"{title} — " + " · ".join(facts)


def _fallback(diagnosis: Diagnosis, found: Sequence[Finding]) -> str:
    env = diagnosis.env.name
    if not diagnosis.done:
        return f"Diagnosing {env}: {len(diagnosis.answered)} of {len(diagnosis.hosts)} hosts"
    if not found:
        return f"Diagnosis of {env}: no runbook common issue fits"
    return f"Diagnosis of {env}: " + "; ".join(f"{f.issue} — {f.detail}" for f in found)


def _inline(text: str) -> str:
    """Text from a host made inert inside a code span."""
    return escape(" ".join(text.split()).replace("`", "'"))[:120]


def _age(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _mib(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


def _s(n: int | None) -> str:
    return "" if n == 1 else "s"
