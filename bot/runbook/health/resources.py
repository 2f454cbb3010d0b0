"""The runbook's resource check (`monitor_resources.sh`): CPU, memory, disk, load, top processes.

`local` is measured with psutil; an SSH host by reading its /proc over the transport, in one
command. Both report the same figures, computed the same way (psutil's formulas):

- CPU %: busy share of all CPUs' time between two samples `interval_s` apart (busy = all
  minus idle and iowait; guest time is already in user/nice);
- memory %: (total - available) / total;
- disk %: used / (used + available to unprivileged users), of the filesystem holding
  `disk_path` (its nearest existing ancestor: an install_dir not created yet is measured on
  the filesystem it will be created on);
- load averages (1, 5, 15 min);
- the top processes by CPU over the same interval, where 100 % is one whole CPU (as in top).

Slack-agnostic: it returns a `Resources` per host; callers classify against
thresholds.cpu_percent / memory_percent and render.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bot.transport import LocalTransport, Shell, Transport

DEFAULT_INTERVAL_S = 0.5
TOP = 5


class ProbeFailed(Exception):
    """The host answered, but not with figures (not Linux, no /proc): one line naming it."""

    def __init__(self, target: str, problem: str) -> None:
        super().__init__(f"{target}: {problem}")
        self.target = target
        self.problem = problem


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    name: str
    cpu_percent: float  # 100 = one whole CPU
    memory_percent: float


@dataclass(frozen=True)
class Resources:
    target: str
    cpu_percent: float
    cpu_count: int
    memory_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_path: str  # the path whose filesystem was measured
    disk_percent: float
    disk_used_bytes: int
    disk_total_bytes: int
    load_average: tuple[float, float, float]
    top_processes: tuple[ProcessUsage, ...]
    interval_s: float


async def probe_resources(
    transport: Transport, *, disk_path: str = "/", interval_s: float = DEFAULT_INTERVAL_S
) -> Resources:
    """One sample of a host's resources (this machine through psutil for LocalTransport).

    Raises TransportError when the host cannot be reached, ProbeFailed when its answer
    makes no sense. Never blocks the event loop: the sampling interval is awaited (locally)
    or slept on the host.
    """
    if isinstance(transport, LocalTransport):
        return await _probe_locally(transport.target, disk_path, interval_s)
    return await _probe_over(transport, disk_path, interval_s)


# --- CPU and memory only, for the scheduled checks ---------------------------------------------


@dataclass(frozen=True)
class Usage:
    """A host's CPU time counters and memory share at one moment.

    The CPU % is what happened between two readings (`cpu_percent_since`): a scheduled check
    reads each host once per check_interval and gets the CPU over the whole interval, with no
    sampling sleep and no walk over the processes.
    """

    target: str
    cpu: tuple[float, float]  # (busy, total) time of all CPUs, in any unit
    memory_percent: float

    def cpu_percent_since(self, earlier: Usage) -> float | None:
        """Busy share of all CPUs between the readings; None if the counters went back (a
        reboot) or did not move."""
        busy, total = self.cpu[0] - earlier.cpu[0], self.cpu[1] - earlier.cpu[1]
        if total <= 0 or busy < 0:
            return None
        return min(100.0, busy / total * 100)


_USAGE_SCRIPT = """\
m={marker}
echo "$m:stat"; grep '^cpu ' /proc/stat
echo "$m:meminfo"; cat /proc/meminfo
"""


async def read_usage(transport: Transport, *, timeout_s: float = 30.0) -> Usage:
    """One reading of a host's CPU counters and memory (psutil for LocalTransport, /proc over
    its transport otherwise, in one short command). Raises TransportError or ProbeFailed."""
    if isinstance(transport, LocalTransport):
        return await asyncio.to_thread(_local_usage, transport.target)
    marker = f"@@eventmesh-usage-{secrets.token_hex(8)}"
    result = await transport.run(Shell(_USAGE_SCRIPT.format(marker=marker)), timeout_s=timeout_s)
    sections = split_sections(result.stdout, marker)
    try:
        cpu, _ = _cpu_line(sections["stat"])
        total, available = meminfo_bytes(sections["meminfo"])
        return Usage(transport.target, cpu, (total - available) / total * 100)
    except (KeyError, ValueError, IndexError, ZeroDivisionError) as exc:
        problem = result.stderr.strip().splitlines()[-1:] or [f"unexpected output ({exc})"]
        raise ProbeFailed(
            transport.target, f"cannot read CPU and memory from /proc: {problem[0]}"
        ) from None


def _local_usage(target: str) -> Usage:
    memory = psutil.virtual_memory()
    return Usage(target, _cpu_seconds(), (memory.total - memory.available) / memory.total * 100)


def _cpu_seconds() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs of this machine so far."""
    times = psutil.cpu_times()
    # psutil's own formula (psutil._cpu_busy_time): guest is already in user/nice.
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


# --- this machine ----------------------------------------------------------------------------


async def _probe_locally(target: str, disk_path: str, interval_s: float) -> Resources:
    # Each snapshot walks every process (a few tens of ms): off the loop; the interval between
    # them is awaited, so no thread sits out the sampling interval.
    before = await asyncio.to_thread(_local_snapshot)
    started = time.monotonic()
    await asyncio.sleep(interval_s)
    after = await asyncio.to_thread(_local_snapshot)
    elapsed = time.monotonic() - started
    path = _existing_ancestor(disk_path)
    disk = await asyncio.to_thread(psutil.disk_usage, path)
    memory = psutil.virtual_memory()  # one read of /proc/meminfo
    cpus = psutil.cpu_count() or 1
    processes = []
    for pid, (name, cpu_s, memory_percent) in after.processes.items():
        earlier = before.processes.get(pid)
        if earlier is None or earlier[0] != name:
            continue  # started (or its pid re-used) during the interval: no rate to give
        processes.append(
            ProcessUsage(pid, name, max(0.0, (cpu_s - earlier[1]) / elapsed * 100), memory_percent)
        )
    return Resources(
        target=target,
        cpu_percent=_busy_percent(before.cpu, after.cpu),
        cpu_count=cpus,
        memory_percent=(memory.total - memory.available) / memory.total * 100,
        memory_used_bytes=memory.total - memory.available,
        memory_total_bytes=memory.total,
        disk_path=path,
        disk_percent=_share(disk.used, disk.free),
        disk_used_bytes=disk.used,
        disk_total_bytes=disk.total,
        load_average=_three(os.getloadavg()),
        top_processes=_top(processes),
        interval_s=elapsed,
    )


@dataclass(frozen=True)
class _LocalSnapshot:
    cpu: tuple[float, float]  # (busy, total) seconds of all CPUs
    processes: dict[int, tuple[str, float, float]]  # pid -> (name, cpu seconds, memory %)


def _local_snapshot() -> _LocalSnapshot:
    with _snapshotting:  # psutil's process cache is shared: one walk at a time
        return _walk()


_snapshotting = threading.Lock()


def _walk() -> _LocalSnapshot:
    cpu = _cpu_seconds()
    processes: dict[int, tuple[str, float, float]] = {}
    for process in psutil.process_iter(["name", "cpu_times", "memory_percent"]):
        info = process.info
        cpu_times = info.get("cpu_times")
        if cpu_times is None:
            continue  # gone, or not ours to read
        processes[process.pid] = (
            info.get("name") or "?",
            cpu_times.user + cpu_times.system,
            info.get("memory_percent") or 0.0,
        )
    return _LocalSnapshot(cpu, processes)


def _existing_ancestor(path: str) -> str:
    candidate = Path(path).absolute()
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return str(candidate)


# --- a host over its transport ---------------------------------------------------------------

# One command, one round trip: two samples of the CPU counters and of every process, then
# memory, load, disk and the page size. Section markers carry a random nonce longer than a
# process name can be (15 characters), so no process can forge one.
_SCRIPT = """\
m={marker}
echo "$m:stat1"; grep '^cpu' /proc/stat
echo "$m:procs1"; cat /proc/[0-9]*/stat 2>/dev/null
sleep {interval}
echo "$m:stat2"; grep '^cpu' /proc/stat
echo "$m:procs2"; cat /proc/[0-9]*/stat 2>/dev/null
echo "$m:meminfo"; cat /proc/meminfo
echo "$m:loadavg"; cat /proc/loadavg
p={path}
while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done
echo "$m:df"; echo "$p"; df -P -k -- "$p"
echo "$m:pagesize"; getconf PAGESIZE
"""


async def _probe_over(transport: Transport, disk_path: str, interval_s: float) -> Resources:
    marker = f"@@eventmesh-probe-{secrets.token_hex(8)}"
    script = _SCRIPT.format(
        marker=marker, interval=f"{interval_s:.3f}", path=shlex.quote(disk_path)
    )
    result = await transport.run(Shell(script), timeout_s=interval_s + 30)
    sections = split_sections(result.stdout, marker)
    try:
        return parse_proc(transport.target, sections, interval_s)
    except (KeyError, ValueError, IndexError, ZeroDivisionError) as exc:
        problem = result.stderr.strip().splitlines()[-1:] or [f"unexpected output ({exc})"]
        raise ProbeFailed(
            transport.target, f"cannot read resources from /proc: {problem[0]}"
        ) from None


def split_sections(text: str, marker: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(marker + ":"):
            current = sections.setdefault(line[len(marker) + 1 :], [])
        elif current is not None:
            current.append(line)
    return sections


def parse_proc(target: str, sections: dict[str, list[str]], interval_s: float) -> Resources:
    """Figures from the probe's sections of /proc text (KeyError/ValueError if malformed)."""
    cpu1, cpus = _cpu_line(sections["stat1"])
    cpu2, _ = _cpu_line(sections["stat2"])
    total, available = meminfo_bytes(sections["meminfo"])
    page_size = int(sections["pagesize"][0])
    disk_path, disk = sections["df"][0], df_kib(sections["df"][1:])
    used_kib, available_kib = disk[1], disk[2]
    # Elapsed time per CPU, in clock ticks, is what a process's ticks are compared with.
    ticks_per_cpu = (cpu2[1] - cpu1[1]) / cpus
    before = _proc_stats(sections["procs1"])
    processes = []
    for pid, (name, ticks, rss_pages) in _proc_stats(sections["procs2"]).items():
        earlier = before.get(pid)
        if earlier is None or earlier[0] != name or ticks_per_cpu <= 0:
            continue
        processes.append(
            ProcessUsage(
                pid,
                name,
                max(0.0, (ticks - earlier[1]) / ticks_per_cpu * 100),
                rss_pages * page_size / total * 100,
            )
        )
    load = sections["loadavg"][0].split()
    return Resources(
        target=target,
        cpu_percent=_busy_percent(cpu1, cpu2),
        cpu_count=cpus,
        memory_percent=(total - available) / total * 100,
        memory_used_bytes=total - available,
        memory_total_bytes=total,
        disk_path=disk_path,
        disk_percent=_share(used_kib, available_kib),
        disk_used_bytes=used_kib * 1024,
        disk_total_bytes=disk[0] * 1024,
        load_average=_three(float(x) for x in load[:3]),
        top_processes=_top(processes),
        interval_s=interval_s,
    )


def meminfo_bytes(lines: Sequence[str]) -> tuple[int, int]:
    """(total, available) bytes from /proc/meminfo's lines."""
    meminfo = {
        name: int(value.split()[0]) * 1024
        for name, _, value in (line.partition(":") for line in lines)
        if value.strip()
    }
    total = meminfo["MemTotal"]
    available = meminfo.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = meminfo["MemFree"] + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    return total, available


def _cpu_line(lines: Sequence[str]) -> tuple[tuple[float, float], int]:
    """((busy, total) ticks of all CPUs, number of CPUs) from /proc/stat's cpu lines."""
    fields = [int(x) for x in lines[0].split()[1:]]
    if not lines[0].startswith("cpu "):
        raise ValueError("no aggregate cpu line")
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest is in user/nice
    total = sum(fields[:8])
    busy = total - fields[3] - fields[4]
    cpus = sum(1 for line in lines[1:] if re.match(r"cpu[0-9]+ ", line))
    return (busy, total), max(cpus, 1)


def _proc_stats(lines: Iterable[str]) -> dict[int, tuple[str, int, int]]:
    """pid -> (name, utime+stime ticks, rss pages) from /proc/[pid]/stat lines."""
    stats: dict[int, tuple[str, int, int]] = {}
    for line in lines:
        start, end = line.find("("), line.rfind(")")
        if start <= 0 or end < start:
            continue  # a name with a newline in it split this line: skip its pieces
        rest = line[end + 2 :].split()
        try:
            # after the name: state(0) ppid ... utime(11) stime(12) ... rss(21)
            stats[int(line[:start])] = (line[start + 1 : end], int(rest[11]) + int(rest[12]),
                                        int(rest[21]))  # fmt: skip
        except (ValueError, IndexError):
            continue
    return stats


def df_kib(lines: Sequence[str]) -> tuple[int, int, int]:
    """(total, used, available) KiB from `df -P -k` (the filesystem name may hold spaces)."""
    for line in lines[1:]:
        match = re.match(r"^.*?\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+%\s+", line + " ")
        if match:
            return int(match[1]), int(match[2]), int(match[3])
    raise ValueError("no df line")


def _busy_percent(before: tuple[float, float], after: tuple[float, float]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    return min(100.0, max(0.0, busy / total * 100))


def _share(used: float, available: float) -> float:
    """used / (used + available), as df and psutil count it (root's reserve left out)."""
    return used / (used + available) * 100 if used + available else 0.0


def _top(processes: list[ProcessUsage]) -> tuple[ProcessUsage, ...]:
    return tuple(sorted(processes, key=lambda p: (-p.cpu_percent, p.pid))[:TOP])


def _three(values: Iterable[float]) -> tuple[float, float, float]:
    one, five, fifteen = values
    return (one, five, fifteen)
