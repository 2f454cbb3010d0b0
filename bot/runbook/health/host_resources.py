"""An environment's hosts' resources, read together and classed; what a resources watch saw.

The probe of one host is bot/runbook/resources.py (psutil for `local`, /proc over SSH). Here
every host of the environment is read at once over transports kept open for as long as the
caller needs them (a watch re-uses its SSH connections), each host's CPU and memory classed
by the config's thresholds.cpu_percent / memory_percent, and a host that cannot be read is a
reading with its problem, not an error for the whole environment.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from bot.clock import Clock, utc_now
from bot.config import Environment, SshSettings, Threshold, Thresholds
from bot.runbook.health.resources import ProbeFailed, Resources, probe_resources
from bot.runbook.levels import Level, level_of, worst_level
from bot.transport import Transport, TransportError, open_transports


@dataclass(frozen=True)
class HostReading:
    """One host at one time: its figures and their levels, or why there are none."""

    target: str
    resources: Resources | None = None
    cpu_level: Level | None = None
    memory_level: Level | None = None
    problem: str | None = None

    @property
    def level(self) -> Level:
        """The host's worst level; a host that cannot be read is critical (nobody can tell)."""
        if self.resources is None:
            return Level.CRITICAL
        return worst_level(*(lv for lv in (self.cpu_level, self.memory_level) if lv is not None))


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    hosts: tuple[HostReading, ...]

    @property
    def level(self) -> Level:
        return worst_level(*(host.level for host in self.hosts))


Reader = Callable[[], Awaitable[Snapshot]]


@asynccontextmanager
async def host_resources(
    env: Environment, ssh: SshSettings, thresholds: Thresholds, clock: Clock = utc_now
) -> AsyncIterator[Reader]:
    """A reader of the environment's hosts; their connections stay open until the block ends.

    The disk measured is the one holding the environment's install_dir (where a deploy
    writes), or its nearest existing ancestor.
    """
    async with open_transports(env, ssh) as transports:

        async def read() -> Snapshot:
            at = clock()
            hosts = await asyncio.gather(
                *(_read_host(t, env.deploy.install_dir, thresholds) for t in transports)
            )
            return Snapshot(at, tuple(hosts))

        yield read


async def _read_host(transport: Transport, disk_path: str, thresholds: Thresholds) -> HostReading:
    try:
        figures = await probe_resources(transport, disk_path=disk_path)
    except (TransportError, ProbeFailed) as exc:
        return HostReading(transport.target, problem=exc.problem)
    return HostReading(
        transport.target,
        resources=figures,
        cpu_level=level_of(figures.cpu_percent, thresholds.cpu_percent),
        memory_level=level_of(figures.memory_percent, thresholds.memory_percent),
    )


# --- what a resources watch saw ---------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Minimum, mean and maximum of a series, and the level of its maximum."""

    minimum: float
    mean: float
    maximum: float
    peak_level: Level


@dataclass(frozen=True)
class HostSummary:
    target: str
    readings: int
    unreadable: int  # readings where the host could not be read
    cpu: Span | None  # None: never read
    memory: Span | None


class ResourcesTally:
    """Each host's series of CPU and memory figures over a watch (None where unreadable)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.snapshots: list[Snapshot] = []
        self.cpu: dict[str, list[float | None]] = {}
        self.memory: dict[str, list[float | None]] = {}

    @property
    def latest(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        for host in snapshot.hosts:
            figures = host.resources
            self.cpu.setdefault(host.target, []).append(figures.cpu_percent if figures else None)
            self.memory.setdefault(host.target, []).append(
                figures.memory_percent if figures else None
            )

    def summary(self) -> list[HostSummary]:
        return [
            HostSummary(
                target=target,
                readings=len(series),
                unreadable=sum(1 for value in series if value is None),
                cpu=_span(series, self.thresholds.cpu_percent),
                memory=_span(self.memory[target], self.thresholds.memory_percent),
            )
            for target, series in self.cpu.items()
        ]


def _span(series: list[float | None], threshold: Threshold) -> Span | None:
    values = [value for value in series if value is not None]
    if not values:
        return None
    top = max(values)
    return Span(min(values), statistics.fmean(values), top, level_of(top, threshold))
