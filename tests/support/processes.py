"""Whether a process is still alive, on this machine (which is also the loopback "host")."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped by its new parent) is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once pid is gone. Waits for a condition (the kernel delivering a signal), not a time."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_pid(path: Path, timeout: float = 10.0) -> int:
    """The pid a command wrote to `path` (waiting for the write to land)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            return int(text)
        if time.monotonic() > deadline:
            raise AssertionError(f"no pid in {path} after {timeout}s")
        time.sleep(0.02)
