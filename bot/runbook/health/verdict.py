"""The diagnosis's verdict: which of the runbook's "Common issues" fit what the hosts said.

RUNBOOK.md, Troubleshooting › Health Check Failures:
    Port already in use → Kill conflicting process
    Service crashed → Check logs for panic/error
    Network issues → Check firewall rules
and › Performance Issues, "Common causes":
    Memory leak → Check memory growth over time
    CPU bottleneck → Profile hot paths
and › Deployment Failures: Health check fails → Check service logs.

Each finding names the issue (the runbook's words where it has them; `runbook` says which),
the evidence (hosts, pids, readings) and what to do next. The text is plain, with Markdown
code spans around names from the hosts (the chat layer renders it, a post-mortem can quote it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise

from bot.config import Thresholds
from bot.runbook.health.diagnosis_probe import DiagnosisSpec, HostDiagnosis
from bot.runbook.health.health import Health, HealthResult
from bot.runbook.health.log_lines import Kind
from bot.runbook.levels import Level

DISK_FULL_PERCENT = 90.0
LOAD_PER_CPU = 2.0  # runnable work per CPU at which the host is CPU-bound
# Memory growth: at least this many scheduled readings, rising at least this many points,
# in at least this share of the steps between them (a leak climbs; a busy hour goes up and down)
GROWTH_READINGS = 6
GROWTH_POINTS = 10.0
GROWTH_STEADY = 0.8
HOSTS_NAMED = 3  # hosts named in a finding shared by many; the rest are counted


@dataclass(frozen=True)
class Finding:
    issue: str
    level: Level
    detail: str
    next_step: str
    hosts: tuple[str, ...] = ()
    runbook: bool = True  # the issue is one the runbook names


@dataclass(frozen=True)
class MemoryGrowth:
    """The environment's memory reading (its fullest host) over the scheduled checks' history."""

    first: float
    last: float
    readings: int
    span: timedelta


def memory_growth(readings: Sequence[float | None], interval: timedelta) -> MemoryGrowth | None:
    """A steady climb in the scheduled checks' last readings (each `interval` apart), or None.

    The bot keeps no per-process history, so this is the host's memory share as the alerts
    record it (bot/runbook/alerts), not the service's RSS: a lead, not a proof.
    """
    values = [value for value in readings if value is not None]
    if len(values) < GROWTH_READINGS:
        return None
    steps = list(pairwise(values))
    steady = sum(1 for before, after in steps if after >= before)
    if values[-1] - values[0] < GROWTH_POINTS or steady < GROWTH_STEADY * len(steps):
        return None
    return MemoryGrowth(values[0], values[-1], len(values), interval * (len(values) - 1))


def findings(
    spec: DiagnosisSpec,
    hosts: Sequence[HostDiagnosis],
    bot_check: HealthResult | None,
    thresholds: Thresholds,
    memory: MemoryGrowth | None = None,
    *,
    env_name: str,
) -> tuple[Finding, ...]:
    """Everything that fits, the most urgent first; the same issue on many hosts is one."""
    found: list[Finding] = []
    for host in hosts:
        found += _host_findings(host, spec, thresholds, env_name)
    found += _network(spec, hosts, bot_check)
    if memory is not None:
        found.append(_memory_growth(memory, env_name))
    return _grouped(found)


def _code(text: object) -> str:
    """A value from a host as a Markdown code span (nothing inside can end it)."""
    return "`" + " ".join(str(text).split()).replace("`", "'")[:160] + "`"


def _host_findings(
    host: HostDiagnosis, spec: DiagnosisSpec, thresholds: Thresholds, env_name: str
) -> list[Finding]:
    if host.problem is not None:
        return [
            Finding(
                "Host not reachable",
                Level.CRITICAL,
                f"{host.target}: {host.problem}",
                "Fix the SSH access as the line says; the other hosts' findings stand.",
                (host.target,),
                runbook=False,
            )
        ]
    found = _port_in_use(host, spec)
    found += _not_running(host, spec) + _not_answering(host, spec)
    found += _log_errors(host, spec, env_name) + _resources(host, thresholds, env_name)
    return found


def _held_by_others(host: HostDiagnosis) -> bool:
    """Something listens on the port, and none of it is the service (as far as can be told:
    a holder the SSH user may not see could be a running service under its own user)."""
    others = host.others_on_port
    if not others or host.port is None or len(others) < len(host.port.listeners):
        return False
    return not (host.running and any(listener.pid is None for listener in others))


def _port_in_use(host: HostDiagnosis, spec: DiagnosisSpec) -> list[Finding]:
    port = host.port
    if port is None or not _held_by_others(host):
        return []  # nobody else, or the service holds it too (a proxy in front is no fault)
    others = host.others_on_port
    if host.running and host.local is not None and host.local.ok:
        return []  # something else holds it and healthz answers: a proxy in front of it
    holder = others[0]
    who = (
        f"pid {holder.pid} {_code(holder.name or '?')}"
        if holder.pid is not None
        else "a process the SSH user may not see"
    )
    service = (
        f"{_code(spec.process)} is not running"
        if host.running is False
        else f"{_code(spec.process)} does not hold it{_how_many(host, spec)}"
    )
    kill = f"`kill {holder.pid}` on {host.target}" if holder.pid is not None else "as root"
    return [
        Finding(
            "Port already in use",
            Level.CRITICAL,
            f"{who} holds {port.port} on {host.target}; {service}",
            f"Kill the conflicting process ({kill}) or move it off {port.port}, then restart "
            "the service.",
            (host.target,),
        )
    ]


def _not_running(host: HostDiagnosis, spec: DiagnosisSpec) -> list[Finding]:
    if host.running is not False:
        return []
    log = host.log
    last = ""
    if log is not None and (log.last_errors or log.last_lines):
        line = (log.last_errors or log.last_lines)[-1]
        which = "last error" if log.last_errors else "last log line"
        last = f"; {which} {_code(line)}"
    elif log is not None and log.problem:
        last = f"; its log {log.problem}"
    return [
        Finding(
            "Service crashed",
            Level.CRITICAL,
            f"{_code(spec.process)} is not running on {host.target}{last}",
            "Check the logs for panic/error (Logs), then restart the service; roll back if "
            "it crashed after a deploy.",
            (host.target,),
        )
    ]


def _not_answering(host: HostDiagnosis, spec: DiagnosisSpec) -> list[Finding]:
    """Runs, but healthz fails on the host itself (or nothing listens where it should)."""
    if host.running is False or host.local is None or host.local.ok:
        return []
    if host.local.tool is None:
        return []  # no way to ask from the host: nothing to say
    port = host.port
    if host.running and port is not None and port.tool is not None and not port.listeners:
        detail = (
            f"{_code(spec.process)} runs on {host.target} but nothing listens on {port.port}"
            f"{_how_many(host, spec)}"
        )
        step = "Check its log and configuration (bound to another port?), then restart it."
    elif _held_by_others(host):
        return []  # said by "Port already in use"
    else:
        answer = (
            f"HTTP {host.local.status}"
            if host.local.status is not None
            else f"no answer ({host.local.problem})"
        )
        detail = f"healthz on {host.target} itself, on loopback: {answer}"
        step = "Check the service logs (Logs): it fails even without the network in between."
    return [Finding("Health check fails", Level.CRITICAL, detail, step, (host.target,))]


def _how_many(host: HostDiagnosis, spec: DiagnosisSpec) -> str:
    """On a host where the name matches several processes, none of them on the port, the
    name may match something other than the service (a shared machine, a too short name)."""
    count = len(host.processes or ())
    if count < 2:
        return ""
    return f" ({count} processes match {_code(spec.process)}: is the name specific enough?)"


def _log_errors(host: HostDiagnosis, spec: DiagnosisSpec, env_name: str) -> list[Finding]:
    log = host.log
    if log is None or log.tally is None or host.running is False:
        return []  # a crashed service's log is in its own finding
    panics, errors = log.tally.total(Kind.PANIC), log.tally.total(Kind.ERROR)
    if not panics and not errors:
        return []
    top = next(c for c in log.tally.counts if c.kind in (Kind.PANIC, Kind.ERROR))
    counted = " and ".join(
        part
        for part in (_count(panics, "panic"), _count(errors, "error"))
        if not part.startswith("0 ")
    )
    return [
        Finding(
            "Errors in the log",
            Level.CRITICAL if panics else Level.WARNING,
            f"{counted} in the last {log.tally.lines:,} lines of {_code(log.path)} on "
            f"{host.target}; most often {_code(top.type)} ({top.count}×)",
            f"Read them: Logs (`/health {env_name} logs errors`).",
            (host.target,),
            runbook=False,
        )
    ]


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _resources(host: HostDiagnosis, thresholds: Thresholds, env_name: str) -> list[Finding]:
    found = []
    memory = host.memory
    if memory is not None and memory.percent > thresholds.memory_percent.critical:
        found.append(
            Finding(
                "High resource usage",
                Level.CRITICAL,
                f"memory {memory.percent:.0f}% on {host.target} (critical over "
                f"{thresholds.memory_percent.critical:g}%)",
                f"See what holds it: `/health {env_name} resources`.",
                (host.target,),
                runbook=False,
            )
        )
    if host.load is not None and host.cpus and host.load[0] >= LOAD_PER_CPU * host.cpus:
        found.append(
            Finding(
                "CPU bottleneck",
                Level.WARNING,
                f"load {host.load[0]:.1f} on {host.cpus} CPU{'' if host.cpus == 1 else 's'} "
                f"on {host.target}",
                f"Profile hot paths (the runbook's perf record); `/health {env_name} resources` "
                "shows the busiest processes.",
                (host.target,),
            )
        )
    for disk in host.disks:
        if disk.percent is not None and disk.percent >= DISK_FULL_PERCENT:
            found.append(
                Finding(
                    "Disk nearly full",
                    Level.WARNING,
                    f"{disk.percent:.0f}% used where the {disk.role} folder is "
                    f"({_code(disk.path)}) on {host.target}",
                    "Free space: old backups (keep_backups), log rotation.",
                    (host.target,),
                    runbook=False,
                )
            )
    return found


def _network(
    spec: DiagnosisSpec, hosts: Sequence[HostDiagnosis], bot_check: HealthResult | None
) -> list[Finding]:
    if bot_check is None or bot_check.health is Health.HEALTHY:
        return []
    answering = [h for h in hosts if h.local is not None and h.local.ok]
    if not answering:
        return []
    first = answering[0]
    assert first.local is not None
    took = f" in {first.local.seconds * 1000:.0f} ms" if first.local.seconds is not None else ""
    reason = bot_check.reasons[0] if bot_check.reasons else bot_check.health.value
    if bot_check.status_code is None:
        seen = f"unreachable from the bot ({reason})"
        level = Level.CRITICAL
    else:
        seen = f"HTTP {bot_check.status_code} from the bot ({reason})"
        level = Level.WARNING
    return [
        Finding(
            "Network issues",
            level,
            f"healthy from the host ({first.target}: HTTP 200{took} on loopback), {seen}",
            f"Check firewall rules between the bot and port {spec.port} of the hosts (and any "
            "load balancer or proxy in front of them).",
            tuple(h.target for h in answering),
        )
    ]


def _memory_growth(memory: MemoryGrowth, env_name: str) -> Finding:
    minutes = max(1, round(memory.span.total_seconds() / 60))
    return Finding(
        "Memory leak",
        Level.WARNING,
        f"memory rose from {memory.first:.0f}% to {memory.last:.0f}% over the last "
        f"{memory.readings} scheduled checks (about {minutes} min; the fullest host's share, "
        "not the service's own RSS)",
        f"Check memory growth over time: `/health {env_name} resources 10m`; a restart frees it "
        "for now, profiling finds the leak.",
    )


_ORDER = {Level.CRITICAL: 0, Level.WARNING: 1, Level.NORMAL: 2}


def _grouped(found: list[Finding]) -> tuple[Finding, ...]:
    """One finding per issue: the first host's evidence, the others counted and named."""
    by_issue: dict[str, list[Finding]] = {}
    for finding in found:
        by_issue.setdefault(finding.issue, []).append(finding)
    merged = []
    for group in by_issue.values():
        first = group[0]
        hosts = tuple(dict.fromkeys(h for f in group for h in f.hosts))
        detail = first.detail
        others = [h for h in hosts if h not in first.hosts]
        if others:
            named = ", ".join(others[:HOSTS_NAMED])
            more = f" and {len(others) - HOSTS_NAMED} more" if len(others) > HOSTS_NAMED else ""
            hosts_word = "host" if len(others) == 1 else "hosts"
            detail += f" (also on {len(others)} other {hosts_word}: {named}{more})"
        level = min((f.level for f in group), key=lambda lv: _ORDER[lv])
        merged.append(Finding(first.issue, level, detail, first.next_step, hosts, first.runbook))
    return tuple(sorted(merged, key=lambda f: _ORDER[f.level]))
