"""Faults that happen once, on POST /admin/faults, beside the lasting ones of service.py:

- `"crash": true` — a panic line in the log, then the service exits (status 101, as a Rust
  panic does): the runbook's "Service crashed";
- `"hold_port": <seconds>` — another process (`port-holder`, bot/demo/port_holder.py) takes
  the service's port for that long and the service exits (status 1) after logging that its
  address is in use: "Port already in use";
- `"log": [{"level": "error", "type": "ConnectionRefused", "count": 7, "message": "…"}, …]` —
  lines appended to the service's log file (needs `--log-file`): level `info`, `warn`,
  `error` or `panic`; type a word (default per level); count 1 to 100,000 (default 1).

They are not kept: GET /admin/faults shows only the lasting faults, and DELETE undoes none of
these (a crashed service is restarted by its supervisor or /deploy, a held port frees itself).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.demo.service_log import LogLine

KEYS = ("crash", "hold_port", "log")
MAX_HOLD_S = 3600
MAX_LOG_LINES = 100_000
CRASH_STATUS = 101  # what a Rust binary exits with after a panic
PORT_LOST_STATUS = 1
_LEVELS = {"info": "INFO", "warn": "WARN", "error": "ERROR", "panic": "ERROR"}
_DEFAULT_TYPE = {"info": "Info", "warn": "Warning", "error": "Error", "panic": "panic"}
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_MESSAGE_MAX = 500


@dataclass(frozen=True)
class LogRequest:
    level: str
    type: str
    count: int
    message: str | None


@dataclass(frozen=True)
class Breakage:
    crash: bool = False
    hold_port_s: int | None = None
    log: tuple[LogRequest, ...] = ()

    @property
    def exit_status(self) -> int | None:
        if self.crash:
            return CRASH_STATUS
        return PORT_LOST_STATUS if self.hold_port_s is not None else None

    def requested_lines(self) -> Iterator[LogLine]:
        for request in self.log:
            for n in range(1, request.count + 1):
                message = request.message or (
                    f"injected {request.level} {n} of {request.count} (POST /admin/faults)"
                )
                module = "main" if request.level == "panic" else "store"
                yield LogLine(_LEVELS[request.level], module, request.type, message)

    def last_words(self, host: str, port: int) -> list[LogLine]:
        """What the service logs on its way out."""
        if self.crash:
            return [
                LogLine(
                    "ERROR",
                    "main",
                    "panic",
                    "thread 'main' panicked at 'injected crash (POST /admin/faults)', "
                    "src/main.rs:42:5",
                )
            ]
        if self.hold_port_s is not None:
            return [
                LogLine(
                    "ERROR",
                    "server",
                    "AddrInUse",
                    f"cannot bind {host}:{port}: Address already in use (os error 98)",
                )
            ]
        return []


def split_breakage(
    changes: dict[str, Any], *, can_exit: bool, has_log: bool
) -> tuple[Breakage, dict[str, Any], list[str]]:
    """The one-off faults in `changes`, the lasting ones left, and every problem found."""
    rest = {key: value for key, value in changes.items() if key not in KEYS}
    problems: list[str] = []
    crash = changes.get("crash", False)
    if not isinstance(crash, bool):
        problems.append("crash must be true or false")
        crash = False
    hold = changes.get("hold_port")
    if hold is not None and not (
        isinstance(hold, int) and not isinstance(hold, bool) and 1 <= hold <= MAX_HOLD_S
    ):
        problems.append(f"hold_port must be a number of seconds from 1 to {MAX_HOLD_S}")
        hold = None
    if crash and hold is not None:
        problems.append("crash and hold_port both end the service: one at a time")
    if (crash or hold is not None) and not can_exit:
        problems.append("this service is embedded in another process and cannot exit")
    log, log_problems = _log_requests(changes.get("log"))
    problems += log_problems
    if log and not has_log:
        problems.append("log needs a log file: start the service with --log-file")
    return Breakage(crash, hold, log), rest, problems


def _log_requests(value: object) -> tuple[tuple[LogRequest, ...], list[str]]:
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), ['log must be a list of {"level", "type", "count", "message"}']
    requests, problems = [], []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"level", "type", "count", "message"}:
            problems.append(f"log[{i}] must be an object with level, type, count, message")
            continue
        level = item.get("level")
        if level not in _LEVELS:
            problems.append(f"log[{i}].level must be one of {', '.join(_LEVELS)}")
            continue
        kind = item.get("type", _DEFAULT_TYPE[level])
        count = item.get("count", 1)
        message = item.get("message")
        if not (isinstance(kind, str) and _TYPE.fullmatch(kind)):
            problems.append(f"log[{i}].type must be a word (a letter, then letters, digits, _)")
        elif not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
            problems.append(f"log[{i}].count must be a whole number from 1")
        elif message is not None and not (
            isinstance(message, str) and 0 < len(message) <= _MESSAGE_MAX and message.isprintable()
        ):
            problems.append(f"log[{i}].message must be one line of at most {_MESSAGE_MAX}")
        else:
            requests.append(LogRequest(level, kind, count, message))
    if sum(r.count for r in requests) > MAX_LOG_LINES:
        problems.append(f"log asks for more than {MAX_LOG_LINES:,} lines at once")
    return tuple(requests), problems


def start_port_holder(host: str, port: int, seconds: int) -> int:
    """Start the process that will take the port once the service lets go of it; its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "bot.demo.port_holder", "--host", host, "--port", str(port),
         "--seconds", str(seconds)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # it outlives the service
    )  # fmt: skip
    return holder.pid
