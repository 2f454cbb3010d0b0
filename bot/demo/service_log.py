"""The demo service's log file, written in the runbook's format so /health diagnose and
/health logs read it as they would the real one (bot/runbook/health/log_lines.py):

    2026-01-12 10:04:31.512 ERROR riptide_api::store: ConnectionRefused: event store refused

date and time (UTC), level, module, then the message, whose first word is the event's type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class LogLine:
    level: str  # INFO, WARN, ERROR
    module: str
    type: str
    message: str


class ServiceLog:
    def __init__(self, path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.path = path
        self._clock = clock

    def write(self, lines: Iterable[LogLine]) -> int:
        """Append the lines (the folder is made if missing); how many were written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with self.path.open("a", encoding="utf-8") as out:
            for line in lines:
                at = self._clock().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                out.write(
                    f"{at} {line.level} riptide_api::{line.module}: {line.type}: {line.message}\n"
                )
                written += 1
        return written
