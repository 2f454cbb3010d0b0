"""/health <env> logs: the runbook's Error Log Analysis on every host of an environment.

    grep -i "error\\|panic\\|fatal" /var/log/eventmesh/*.log    → logs errors
    grep -i "error" api.log | awk '{print $5}' | sort | uniq -c  → the counts by type
    tail -f api.log | grep -E "(ERROR|WARN)"                    → logs warnings, logs [N]

The last N lines of the log (default 100, at most 5,000), or only its errors (panic and error
lines) or warnings, or only the lines that contain a text — matched literally. What kind a
line is, and its type, is log_lines.py's call, made here in Python; the host only narrows the
log down with a coarse, constant filter (a superset), so a big log never crosses the wire.

The text to match never reaches a shell nor a command line: it is fed to `grep -F -f -` on its
standard input (a fixed-string pattern, one line of it), and the lines grep returns are
checked again here with a plain `in`. A text with a line break or a NUL cannot be one grep
pattern: the host then filters on its longest piece without them, and the check here (which a
single log line containing a line break can never pass) has the last word.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from bot.config import Environment, SshSettings
from bot.runbook.health.each_host import on_each_host
from bot.runbook.health.log_lines import (
    LOG_STATE,
    MAX_LOG_BYTES,
    Kind,
    LogTally,
    kinds_of,
    log_text,
    shown,
    tally,
)
from bot.runbook.health.resources import split_sections
from bot.transport import CommandTimedOut, Shell, Transport, TransportError

DEFAULT_LINES = 100
MAX_LINES = 5000
# With a filter the host cannot apply exactly, it sends the last SCAN_LINES lines that pass
# its coarse one, and the last N that pass the exact one are kept here.
SCAN_LINES = 20_000
COMMAND_TIMEOUT_S = 120.0  # grep through a big log


class Which(StrEnum):
    ALL = "all"
    ERRORS = "errors"
    WARNINGS = "warnings"


# Coarse, case-insensitive filters that every line of the kind passes (log_lines.classify).
_COARSE = {
    Which.ERRORS: "err|crit|severe|panic|fatal",
    Which.WARNINGS: "warn",
}
_KINDS = {
    Which.ALL: None,
    Which.ERRORS: (Kind.PANIC, Kind.ERROR),
    Which.WARNINGS: (Kind.WARNING,),
}


@dataclass(frozen=True)
class LogQuery:
    which: Which = Which.ALL
    count: int = DEFAULT_LINES
    text: str | None = None  # lines containing it, literally

    @property
    def grep_piece(self) -> str | None:
        """What the host's `grep -F` looks for: the text, or its longest one-line piece."""
        if self.text is None:
            return None
        return max(re.split(r"[\n\r\x00]", self.text), key=len)

    @property
    def exact_on_host(self) -> bool:
        """The host's filter is the whole filter: its last N lines are the answer."""
        if self.which is not Which.ALL:
            return False
        return self.text is None or self.grep_piece == self.text

    def script(self, marker: str, log_file: str) -> tuple[str, bytes | None]:
        """The command (a constant, with the path quoted) and what to feed it on stdin."""
        lines = self.count if self.exact_on_host else SCAN_LINES
        piece = self.grep_piece
        if piece is not None:
            reader = 'grep -a -F -f - -- "$log"'
        elif self.which is Which.ALL:
            reader = 'tail -n "$n" -- "$log"'
        else:
            reader = f'grep -a -i -E -e {shlex.quote(_COARSE[self.which])} -- "$log"'
        if not reader.startswith("tail"):
            reader += ' | tail -n "$n"'
        script = (
            f"log={shlex.quote(log_file)}\nn={lines}\necho {marker}:log\n"
            f"{LOG_STATE} {reader} | tail -c {MAX_LOG_BYTES}; fi\n"
        )
        stdin = None if piece is None else piece.encode() + b"\n"
        return script, stdin

    def keeps(self, line_kind: Kind | None, line: str) -> bool:
        kinds = _KINDS[self.which]
        if kinds is not None and line_kind not in kinds:
            return False
        return self.text is None or self.text in line


@dataclass(frozen=True)
class HostLog:
    target: str
    path: str
    lines: tuple[str, ...] = ()  # the lines found, oldest first, redacted
    tally: LogTally | None = None
    cut: bool = False  # the host had more than MAX_LOG_BYTES of them: the first ones left out
    problem: str | None = None


async def read_log(transport: Transport, log_file: str, query: LogQuery) -> HostLog:
    """One host's part; a host that cannot be read is a HostLog with its problem."""
    marker = f"@@eventmesh-logs-{secrets.token_hex(8)}"
    script, stdin = query.script(marker, log_file)
    try:
        result = await transport.run(Shell(script), stdin=stdin, timeout_s=COMMAND_TIMEOUT_S)
    except CommandTimedOut:
        return HostLog(
            transport.target,
            log_file,
            problem=f"reading the log took longer than {COMMAND_TIMEOUT_S:g}s",
        )
    except TransportError as exc:
        return HostLog(transport.target, log_file, problem=exc.problem)
    text = log_text(split_sections(result.stdout, marker).get("log"), result.stderr)
    if text.problem is not None:
        return HostLog(transport.target, log_file, problem=text.problem)
    kept = [line for line in kinds_of(text.lines) if query.keeps(line.kind, line.text)]
    kept = kept[-query.count :]
    return HostLog(
        transport.target,
        log_file,
        lines=tuple(shown(line.text) for line in kept),
        tally=tally(kept),
        cut=text.cut,
    )


async def search_logs(
    env: Environment, ssh: SshSettings, query: LogQuery
) -> AsyncIterator[tuple[int, HostLog]]:
    """(position in env.hosts, what its log holds), as each host answers, 5 at a time."""
    log_file = env.deploy.log_file
    async for answered in on_each_host(env, ssh, lambda host: read_log(host, log_file, query)):
        yield answered
