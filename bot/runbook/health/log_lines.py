"""An EventMesh log read the way the runbook's Error Log Analysis reads it.

The runbook:

    grep -i "error\\|panic\\|fatal" /var/log/eventmesh/*.log                        # search
    grep -i "error" /var/log/eventmesh/api.log | awk '{print $5}' | sort | uniq -c  # types
    tail -f /var/log/eventmesh/api.log | grep -E "(ERROR|WARN)"                    # patterns

Its `$5` fits the service's log format, `<date> <time> <LEVEL> <target> <message>`:

    2026-01-12 10:04:31.512 ERROR riptide_api::store: ConnectionRefused: event store refused

fields 1-2 are the time, 3 the level, 4 the module and 5 the first word of the message: the
error's *type* (here `ConnectionRefused`). So, line by line:

- the *level* is the first of the line's first four words that is a level name (ERROR, WARN,
  INFO, …) written as one: in capitals, in brackets or before a colon (`ERROR`, `[error]`,
  `error:`; not the word in a sentence);
- its *kind*: `panic` when the line says panic, panicked or fatal anywhere (a Rust panic's own
  message has no level), else `error` for ERROR / ERR / CRITICAL / CRIT / SEVERE and `warning`
  for WARN / WARNING; a line at another level (INFO, DEBUG) is neither, even when its message
  mentions an error. A line with no level word at all (a stack trace, a raw panic message) is
  an error when it says error, a warning when it says warn — what the runbook's `grep -i`
  would count;
- its *type*: the word two after the level (the runbook's `$5` when the level is the third
  word), without a trailing colon or brackets; `(no type)` when the line ends before it,
  `(no level)` for a line without a level word.

Lines are shown redacted (tokens, passwords: bot/runbook/changes/progress.py) and cut short.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.runbook.changes.progress import redact

LINE_MAX = 300  # characters of one log line shown; the rest is cut
# A host sends at most this many bytes of log lines (`tail -c`), so the command's whole output
# stays under the transports' 1 MiB (bot/transport/output.py) with room for the other checks.
MAX_LOG_BYTES = 900_000
NO_TYPE = "(no type)"
NO_LEVEL = "(no level)"


class Kind(StrEnum):
    PANIC = "panic"
    ERROR = "error"
    WARNING = "warning"

    @property
    def label(self) -> str:
        """As the log writes it: PANIC, ERROR, WARN."""
        return "WARN" if self is Kind.WARNING else self.value.upper()


_LEVELS: dict[str, Kind | None] = {
    "PANIC": Kind.PANIC,
    "FATAL": Kind.PANIC,
    "ERROR": Kind.ERROR,
    "ERR": Kind.ERROR,
    "CRITICAL": Kind.ERROR,
    "CRIT": Kind.ERROR,
    "SEVERE": Kind.ERROR,
    "WARN": Kind.WARNING,
    "WARNING": Kind.WARNING,
    "NOTICE": None,
    "INFO": None,
    "DEBUG": None,
    "TRACE": None,
}
_PANIC = re.compile(r"\b(?:panic|panicked|fatal)\b", re.IGNORECASE)
_ERROR = re.compile(r"error", re.IGNORECASE)
_WARN = re.compile(r"warn", re.IGNORECASE)
_LEVEL_AMONG = 4  # the level is one of a line's first four words
_TYPE_MAX = 60


@dataclass(frozen=True)
class LogLine:
    text: str  # as read (not yet redacted)
    kind: Kind | None
    type: str


def classify(text: str) -> LogLine:
    words = text.split()
    for index, word in enumerate(words[:_LEVEL_AMONG]):
        bare = word.strip("[]():")
        # ERROR, [error], error: — a level; "error" in a sentence is not one
        if bare.upper() in _LEVELS and (bare.isupper() or bare != word):
            level = bare.upper()
            kind = Kind.PANIC if _PANIC.search(text) else _LEVELS[level]
            return LogLine(text, kind, _type_word(words[index + 2 : index + 3]))
    if _PANIC.search(text):
        kind: Kind | None = Kind.PANIC
    elif _ERROR.search(text):
        kind = Kind.ERROR
    elif _WARN.search(text):
        kind = Kind.WARNING
    else:
        kind = None
    return LogLine(text, kind, NO_LEVEL)


def _type_word(words: Sequence[str]) -> str:
    if not words:
        return NO_TYPE
    word = words[0].strip("[]()\"'`,;").rstrip(":")
    return word[:_TYPE_MAX] or NO_TYPE


@dataclass(frozen=True)
class TypeCount:
    kind: Kind
    type: str
    count: int


@dataclass(frozen=True)
class LogTally:
    """How many panic, error and warning lines of each type a stretch of log holds."""

    lines: int  # lines read, of every kind
    counts: tuple[TypeCount, ...]  # the most frequent first

    def total(self, *kinds: Kind) -> int:
        return sum(count.count for count in self.counts if count.kind in kinds)


def tally(lines: Sequence[LogLine]) -> LogTally:
    counter = Counter((line.kind, line.type) for line in lines if line.kind is not None)
    ranked = sorted(
        counter.items(), key=lambda item: (-item[1], _KIND_ORDER[item[0][0]], item[0][1])
    )
    return LogTally(len(lines), tuple(TypeCount(kind, type_, n) for (kind, type_), n in ranked))


_KIND_ORDER = {Kind.PANIC: 0, Kind.ERROR: 1, Kind.WARNING: 2}


def shown(text: str) -> str:
    """A log line as people may see it: secrets redacted, one line, cut to LINE_MAX."""
    line = redact(text).replace("\t", " ")
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line if len(line) <= LINE_MAX else line[: LINE_MAX - 1] + "…"


# --- reading a log on a host ------------------------------------------------------------------

# Shell, with "$log" set to the file: the section's first line says whether it can be read, and
# the reader that follows `else` runs only when it can. Used as f"{LOG_STATE} <reader>; fi".
LOG_STATE = """\
if [ ! -e "$log" ]; then echo missing
elif [ -d "$log" ]; then echo directory
elif [ ! -r "$log" ]; then echo unreadable
else echo ok;"""

_STATES = {
    "missing": "does not exist",
    "directory": "is a folder, not a file",
    "unreadable": "cannot be read by the SSH user (permission denied)",
}


@dataclass(frozen=True)
class LogText:
    """What a host sent of its log: the lines (last ones), or why there are none."""

    lines: tuple[str, ...] = ()
    problem: str | None = None
    cut: bool = False  # more lines were asked for than MAX_LOG_BYTES holds: the first ones left


def log_text(section: Sequence[str] | None, stderr: str) -> LogText:
    """The log section of a host's answer: its state line, then the lines read."""
    if not section:
        problem = _reader_problem(stderr) or "the host did not say (the command stopped early)"
        return LogText(problem=problem)
    state, lines = section[0].strip(), list(section[1:])
    if state != "ok":
        return LogText(problem=_STATES.get(state, f"cannot be read ({state[:80]})"))
    if not lines:
        problem = _reader_problem(stderr)
        if problem:
            return LogText(problem=problem)
    cut = sum(len(line.encode()) + 1 for line in lines) >= MAX_LOG_BYTES
    if cut:
        lines = lines[1:]  # `tail -c` began inside it
    return LogText(tuple(lines), cut=cut)


def _reader_problem(stderr: str) -> str | None:
    """The reader's own complaint (tail: cannot open …: Permission denied), if it made one."""
    for line in stderr.splitlines():
        if line.startswith(("tail:", "grep:")):
            return line.strip()[:200]
    return None


def kinds_of(lines: Iterable[str]) -> list[LogLine]:
    return [classify(line) for line in lines]
