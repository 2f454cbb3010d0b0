"""Reading a log as the runbook's Error Log Analysis does: kinds, types (its `$5`), counts."""

from __future__ import annotations

import pytest

from bot.runbook.health.log_lines import (
    LINE_MAX,
    MAX_LOG_BYTES,
    NO_LEVEL,
    NO_TYPE,
    Kind,
    classify,
    kinds_of,
    log_text,
    shown,
    tally,
)

RUNBOOK_FORMAT = "2026-01-12 10:04:31.512 ERROR riptide_api::store: ConnectionRefused: refused"


@pytest.mark.parametrize(
    ("line", "kind", "type_"),
    [
        # <date> <time> <LEVEL> <target> <message>: the type is the runbook's $5
        (RUNBOOK_FORMAT, Kind.ERROR, "ConnectionRefused"),
        (
            "2026-01-12 10:04:31.512 WARN riptide_api::db: SlowQuery: 2.3s",
            Kind.WARNING,
            "SlowQuery",
        ),
        ("2026-01-12 10:04:31.512 INFO riptide_api::api: Request: error=0", None, "Request"),
        # an ISO time in one word, the level in brackets: the word two after the level
        ("2026-01-12T10:04:31Z [error] api: Timeout after 5s", Kind.ERROR, "Timeout"),
        ("2026-01-12T10:04:31Z WARNING worker: ", Kind.WARNING, NO_TYPE),
        ("2026-01-12 10:04:31 CRITICAL db: DiskFull: /var", Kind.ERROR, "DiskFull"),
        # panic and fatal win over the level word, wherever they are
        ("2026-01-12 10:04:31.512 ERROR riptide_api::main: panic: boom", Kind.PANIC, "panic"),
        (
            "2026-01-12 10:04:31.512 FATAL riptide_api::main: OutOfMemory: no",
            Kind.PANIC,
            "OutOfMemory",
        ),
        # no level word: the runbook's grep -i
        ("thread 'main' panicked at src/main.rs:42:5:", Kind.PANIC, NO_LEVEL),
        ("Caused by: connection error (os error 111)", Kind.ERROR, NO_LEVEL),
        ("a deprecated setting: warn the operator", Kind.WARNING, NO_LEVEL),
        ("error: config file not found", Kind.ERROR, "file"),  # no module: a word too far
        ("   at riptide_api::store::connect", None, NO_LEVEL),
        ("", None, NO_LEVEL),
        # words that merely contain a level are not one
        ("2026-01-12 10:04:31 ERRORS riptide: x y", Kind.ERROR, NO_LEVEL),
        ("2026-01-12 10:04:31 INFO api: panic_threshold: set", None, "panic_threshold"),
    ],
)
def test_kind_and_type(line: str, kind: Kind | None, type_: str) -> None:
    found = classify(line)
    assert (found.kind, found.type) == (kind, type_)


def test_counts_by_type_most_first() -> None:
    lines = (
        ["2026-01-12 10:00:00.000 ERROR m: Timeout: x"] * 5
        + ["2026-01-12 10:00:00.000 ERROR m: ConnectionRefused: x"] * 7
        + ["2026-01-12 10:00:00.000 WARN m: SlowQuery: x"] * 3
        + ["2026-01-12 10:00:00.000 INFO m: Request: x"] * 10
    )
    counted = tally(kinds_of(lines))
    assert counted.lines == 25
    assert [(c.kind, c.type, c.count) for c in counted.counts] == [
        (Kind.ERROR, "ConnectionRefused", 7),
        (Kind.ERROR, "Timeout", 5),
        (Kind.WARNING, "SlowQuery", 3),
    ]
    assert counted.total(Kind.ERROR) == 12 and counted.total(Kind.PANIC, Kind.WARNING) == 3


def test_lines_shown_are_redacted_one_line_and_short() -> None:
    assert shown("ERROR db: Auth: password=hunter2 token: xoxb-1234567890-abc") == (
        "ERROR db: Auth: password=[redacted] token: [redacted]"
    )
    assert shown("a\tb\x00c\x1b[31m") == "a b?c?[31m"
    long = shown("x" * 1000)
    assert len(long) == LINE_MAX and long.endswith("…")


def test_the_state_line_says_why_there_are_no_lines() -> None:
    assert log_text(["missing"], "").problem == "does not exist"
    assert log_text(["unreadable"], "").problem == (
        "cannot be read by the SSH user (permission denied)"
    )
    assert log_text(["directory"], "").problem == "is a folder, not a file"
    assert log_text(["ok"], "tail: cannot open 'x' for reading: Permission denied").problem == (
        "tail: cannot open 'x' for reading: Permission denied"
    )
    assert log_text(None, "sh: 1: timeout: not found").problem == (
        "the host did not say (the command stopped early)"
    )
    assert log_text(["ok"], "").lines == ()


def test_lines_cut_by_the_byte_limit_lose_their_broken_first_line() -> None:
    line = "2026-01-12 10:00:00.000 INFO m: Request: " + "y" * 60
    count = MAX_LOG_BYTES // (len(line) + 1) + 1
    text = log_text(["ok", "…partial", *[line] * count], "")
    assert text.cut and text.lines[0] == line and len(text.lines) == count
    assert not log_text(["ok", line, line], "").cut
