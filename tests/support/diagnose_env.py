"""A demo EventMesh service that writes its log, run as a process of its own on this machine —
the "host" behind the loopback sshd — for /health diagnose and /health logs.

Each service's folder has a unique name that is also in its command line (via --log-file), so
an environment's `process` can name exactly it among the other demo services on the machine.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import clean_env, free_port, listens_on, serving_or_stopped, stop_process

EXIT_TIMEOUT_S = 20.0


@dataclass
class LoggedService:
    name: str  # unique, in its command line: the environment's `process`
    url: str
    port: int
    log_file: Path
    process: subprocess.Popen[bytes]
    holders: list[int]

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/admin/faults", json=faults, timeout=10)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        if "holder_pid" in answer:
            self.holders.append(int(answer["holder_pid"]))
        return answer

    def write_log(self, *entries: tuple[str, str, int]) -> None:
        """(level, type, count) lines, written by the service itself."""
        self.set_faults(log=[{"level": lv, "type": t, "count": n} for lv, t, n in entries])

    def wait_exited(self) -> int:
        return self.process.wait(timeout=EXIT_TIMEOUT_S)

    def stop(self) -> None:
        stop_process(self.process)
        for pid in self.holders:
            end(pid)


def end(pid: int) -> None:
    """Kill a process that is not our child, and wait until it is gone."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).kill()
    wait_gone(pid)


def wait_gone(pid: int) -> None:
    """Until a process that is not our child has exited: gone, or a zombie (its parent has
    exited too, and whoever inherited it reaps it in its own time)."""
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    try:
        process = psutil.Process(pid)
        while process.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"pid {pid} still runs"
            time.sleep(0.05)  # waiting for it to exit, a condition
    except psutil.NoSuchProcess:
        pass


def start_logged_service(tmp: Path, *, log: bool = True) -> LoggedService:
    name = f"svc-{uuid.uuid4().hex[:10]}"
    folder = tmp / name
    folder.mkdir(parents=True)
    log_file = folder / "log" / "api.log"
    port = free_port()
    args = [sys.executable, "-m", "bot.cli", "demo-service", "--port", str(port)]
    if log:
        args += ["--log-file", str(log_file)]
    else:
        args += ["--version", name]  # its name in the command line all the same
    output = folder / "output.txt"
    process = subprocess.Popen(
        args, stdout=output.open("wb"), stderr=subprocess.STDOUT, env=clean_env()
    )
    url = f"http://127.0.0.1:{port}"
    serving_or_stopped(f"{url}/healthz", process, output)
    return LoggedService(name, url, port, log_file, process, [])


def wait_for_listener(port: int, pid: int) -> None:
    """Until `pid` listens on `port` (the port holder has taken it over)."""
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if listens_on(pid, port):
            return
        time.sleep(0.05)  # waiting for the holder to bind, a condition
    raise AssertionError(f"pid {pid} did not take port {port} within {EXIT_TIMEOUT_S}s")


def environment(service: LoggedService, hosts: list[str], **overrides: Any) -> dict[str, Any]:
    """An environment entry (as in the config file) for the service behind these hosts."""
    return {
        "base_url": service.url,
        "hosts": hosts,
        "process": service.name,
        "log_file": str(service.log_file),
        "install_dir": str(service.log_file.parent.parent),
        "check_interval": "30s",
        **overrides,
    }
