"""This bot process's identity: the one id every row it holds is marked with.

Deployments, timer claims and posting leases all say which process holds them, with the same
id (host, pid and the process's start time, so a pid reused after a restart is not mistaken
for the bot that held it).
"""

from __future__ import annotations

import os
import signal
import socket

import psutil


def _this_process() -> str:
    started = int(psutil.Process().create_time() * 1000)
    return f"{socket.gethostname()}:{os.getpid()}:{started}"


THIS_PROCESS = _this_process()


def process_alive(owner: str) -> bool | None:
    """Whether the bot process named by owner still runs; None when it ran on another machine."""
    try:
        host, pid, started = owner.rsplit(":", 2)
        pid_number, started_ms = int(pid), int(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(pid_number)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # dead, not yet reaped
        return abs(process.create_time() * 1000 - started_ms) < 1000
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


# The crash tests (tests/test_kill_points.py) name a point here; the bot SIGKILLs itself there,
# so a crash is tried at an exact point of a deploy or rollback, not at a guessed moment.
KILL_AT = "EVENTMESH_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """Die here, at once and without cleaning up, when EVENTMESH_TEST_KILL_AT names this point
    (never set outside those tests)."""
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
