"""The resources probe: psutil for `local`, /proc over SSH for hosts (the loopback sshd's host
is this machine, so both must agree with psutil here)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bot.runbook.health.resources import ProbeFailed, Resources, parse_proc, probe_resources
from bot.transport import CommandResult, LocalTransport, Shell, SshTransport, Transport
from tests.support.sshd import Sshd

INTERVAL_S = 1.0


@pytest.fixture
def burner() -> Iterator[int]:
    """A process keeping one CPU busy: it must top the list of processes by CPU."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def probe_beside_psutil(transport: Transport, disk_path: str) -> tuple[Resources, float]:
    """The probe's figures, and psutil's CPU % over a window enclosing the probe's."""

    async def main() -> tuple[Resources, float]:
        psutil.cpu_percent(None)
        try:
            resources = await probe_resources(transport, disk_path=disk_path, interval_s=INTERVAL_S)
        finally:
            await transport.close()
        return resources, psutil.cpu_percent(None)

    return asyncio.run(main())


def assert_agrees_with_psutil(resources: Resources, cpu_around: float, burner: int) -> None:
    memory = psutil.virtual_memory()
    assert resources.memory_percent == pytest.approx(memory.percent, abs=3)
    assert resources.memory_total_bytes == memory.total
    disk = psutil.disk_usage(resources.disk_path)
    assert resources.disk_percent == pytest.approx(disk.percent, abs=1)
    assert resources.disk_total_bytes == pytest.approx(disk.total, rel=0.01)
    assert resources.load_average[0] == pytest.approx(os.getloadavg()[0], abs=1.0)
    assert resources.cpu_count == psutil.cpu_count()
    # The machine is shared, so CPU moves: compare with psutil over an enclosing window.
    assert resources.cpu_percent == pytest.approx(cpu_around, abs=20)
    assert resources.cpu_percent >= 100 / resources.cpu_count * 0.3  # the burner alone
    assert len(resources.top_processes) == 5
    cpu = [p.cpu_percent for p in resources.top_processes]
    assert cpu == sorted(cpu, reverse=True)
    burning = [p for p in resources.top_processes if p.pid == burner]
    assert burning, f"the busy process {burner} is not in {resources.top_processes}"
    assert burning[0].cpu_percent >= 30 and burning[0].name.startswith("python")


def test_local_figures_match_psutil(burner: int, tmp_path: Path) -> None:
    resources, cpu_around = probe_beside_psutil(LocalTransport(), str(tmp_path))
    assert resources.target == "local"
    assert resources.disk_path == str(tmp_path)
    assert_agrees_with_psutil(resources, cpu_around, burner)


def test_ssh_figures_come_from_the_hosts_proc(
    sshd: Sshd, burner: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.transport.ssh")
    not_yet = tmp_path / "opt" / "eventmesh" / "staging"  # an install_dir not created yet
    resources, cpu_around = probe_beside_psutil(
        SshTransport(sshd.host, sshd.settings()), str(not_yet)
    )
    assert resources.target == str(sshd.host)
    assert resources.disk_path == str(tmp_path)  # its nearest existing ancestor
    assert_agrees_with_psutil(resources, cpu_around, burner)
    # The figures were read on the host, over SSH: the transport's command log says so.
    commands = [r.getMessage() for r in caplog.records if r.name == "bot.transport.ssh"]
    probe = [c for c in commands if "/proc/stat" in c and "/proc/meminfo" in c]
    assert probe and probe[0].startswith(f"{sshd.host}: exit 0 in ")


def test_figures_from_known_proc_text() -> None:
    """Computed by hand from the text below."""
    sections = {
        "stat1": ["cpu  100 0 50 800 50 0 0 0 0 0", "cpu0 50 0 25 400 25 0 0 0 0 0", "cpu1 x"],
        "procs1": [
            "42 (busy one) R 1 42 42 0 -1 4194560 0 0 0 0 10 0 0 0 20 0 1 0 5 0 2560",
            "43 (my (odd) name) S 1 43 43 0 -1 4194560 0 0 0 0 4 1 0 0 20 0 1 0 5 0 10",
            "44 (gone soon) S 1 44 44 0 -1 4194560 0 0 0 0 90 9 0 0 20 0 1 0 5 0 10",
            "45 (name with",
            "newline) S 1 45 45 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 0 1",
        ],
        "stat2": ["cpu  160 0 70 900 70 0 0 0 0 0", "cpu0 80 0 35 450 35 0 0 0 0 0", "cpu1 x"],
        "procs2": [
            "42 (busy one) R 1 42 42 0 -1 4194560 0 0 0 0 50 10 0 0 20 0 1 0 5 0 2560",
            "43 (my (odd) name) S 1 43 43 0 -1 4194560 0 0 0 0 9 1 0 0 20 0 1 0 5 0 10",
            "46 (new) S 1 46 46 0 -1 4194560 0 0 0 0 500 0 0 0 20 0 1 0 5 0 10",
        ],
        "meminfo": ["MemTotal:        1000000 kB", "MemFree: 100000 kB", "MemAvailable: 250000 kB"],
        "loadavg": ["0.50 0.40 0.30 1/100 123"],
        "df": [
            "/srv/data",
            "Filesystem     1024-blocks  Used Available Capacity Mounted on",
            "/dev/my disk          1000   300       600      34% /srv",
        ],
        "pagesize": ["4096"],
    }
    figures = parse_proc("deploy@web-1", sections, 1.0)
    # busy: (1200-900-70) - (1000-800-50) = 80 of 200 ticks
    assert figures.cpu_percent == pytest.approx(40.0)
    assert figures.cpu_count == 2
    assert figures.memory_percent == pytest.approx(75.0)
    assert figures.memory_total_bytes == 1000000 * 1024
    assert figures.disk_path == "/srv/data"
    assert figures.disk_percent == pytest.approx(100 * 300 / 900)
    assert figures.disk_total_bytes == 1000 * 1024
    assert figures.load_average == (0.5, 0.4, 0.3)
    # 100 ticks per CPU elapsed: pid 42 used 50 (50 %), pid 43 used 5 (5 %)
    assert [(p.pid, p.name, p.cpu_percent) for p in figures.top_processes] == [
        (42, "busy one", pytest.approx(50.0)),
        (43, "my (odd) name", pytest.approx(5.0)),
    ]
    assert figures.top_processes[0].memory_percent == pytest.approx(
        2560 * 4096 / (1000000 * 1024) * 100
    )


class NotLinux:
    """A host whose shell has no /proc (say, a BSD): what its answer looks like."""

    target = "deploy@bsd-1"

    async def run(self, command: Shell, **_: object) -> CommandResult:
        return CommandResult(self.target, command.text, 2, "", "grep: /proc/stat: No such file\n",
                             0.1)  # fmt: skip

    async def close(self) -> None:
        return None


def test_a_host_without_proc_is_one_clear_line() -> None:
    with pytest.raises(ProbeFailed) as caught:
        asyncio.run(probe_resources(NotLinux(), interval_s=0.01))  # type: ignore[arg-type]
    assert str(caught.value) == (
        "deploy@bsd-1: cannot read resources from /proc: grep: /proc/stat: No such file"
    )
