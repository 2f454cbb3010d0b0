"""/health logs on a host over the loopback sshd: the last lines, errors or warnings only, and
text matched literally — hostile texts included, with what the transport ran recorded."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from bot.runbook.health.log_search import HostLog, LogQuery, Which, read_log
from bot.transport import SshTransport
from tests.support.sshd import Sshd

LINE = "2026-01-12 10:{:02d}:00.000 {} riptide_api::{}: {}: {}"


def read(sshd: Sshd, log: Path, query: LogQuery) -> HostLog:
    async def run() -> HostLog:
        transport = SshTransport(sshd.host, sshd.settings())
        try:
            return await read_log(transport, str(log), query)
        finally:
            await transport.close()

    return asyncio.run(run())


def ran(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the SSH transport logged running: '<host>: exit <n> in <s>s: <command>'."""
    messages = [r.getMessage() for r in caplog.records if r.name == "bot.transport.ssh"]
    return [m for m in messages if re.match(r"\S+: exit \d+ in ", m)]


def hostile_texts(canary: Path) -> list[str]:
    return [
        "$(reboot)",
        "`reboot`",
        "; reboot",
        f"$(touch {canary})",
        f"'; touch {canary}; '",
        "it's",
        "-e",
        "--help",
        "a\nb",
        "\x00",
        "\\n",
        ".*",
        '"$log"',
    ]


def test_hostile_texts_are_matched_literally_and_never_run(
    sshd: Sshd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.transport.ssh")
    canary = tmp_path / "canary"
    texts = hostile_texts(canary)
    lines = [LINE.format(i, "INFO", "api", "Request", f"q={t}") for i, t in enumerate(texts)]
    lines += [LINE.format(50, "INFO", "api", "Request", "plain"), "a", "b"]
    log = tmp_path / "api.log"
    log.write_bytes("".join(f"{line}\n" for line in lines).encode())
    lines = log.read_bytes().decode().split("\n")[:-1]  # "a\nb" is two lines in the file

    commands = []
    for text in texts:
        caplog.clear()
        found = read(sshd, log, LogQuery(text=text))
        expected = [line for line in lines if text in line]
        assert found.problem is None, (text, found.problem)
        assert list(found.lines) == [line.replace("\x00", "?") for line in expected], text
        (command,) = ran(caplog)
        ran_there = command.split("s: ", 1)[1]
        # The marker is random; n is 100, or more where the host can only narrow the search.
        ran_there = re.sub(r"@@eventmesh-logs-[0-9a-f]+", "MARKER", ran_there)
        commands.append(re.sub(r"\nn=\d+\n", "\nn=N\n", ran_there))
    # One and the same command for every text: none of them was ever part of what ran.
    assert len(set(commands)) == 1 and "grep -a -F -f - --" in commands[0]
    assert not canary.exists()
    assert read(sshd, log, LogQuery(text="a\nb")).lines == ()  # no line holds a line break


def test_the_last_n_lines_errors_and_warnings(sshd: Sshd, tmp_path: Path) -> None:
    lines = [LINE.format(i % 60, "INFO", "api", "Request", f"n={i}") for i in range(6000)]
    lines[5990] = LINE.format(1, "ERROR", "store", "Timeout", "after 5s")
    lines[5991] = LINE.format(1, "INFO", "api", "Retry", "after an error")  # not an error line
    lines[5992] = LINE.format(1, "WARN", "store", "SlowQuery", "2.3s")
    lines[10] = LINE.format(1, "ERROR", "main", "panic", "thread 'main' panicked")
    log = tmp_path / "api.log"
    log.write_text("".join(f"{line}\n" for line in lines))

    last = read(sshd, log, LogQuery(count=5000))
    assert list(last.lines) == lines[-5000:] and not last.cut

    errors = read(sshd, log, LogQuery(Which.ERRORS, count=100))
    assert list(errors.lines) == [lines[10], lines[5990]]
    assert errors.tally is not None
    assert [(c.type, c.count) for c in errors.tally.counts] == [("panic", 1), ("Timeout", 1)]

    warnings = read(sshd, log, LogQuery(Which.WARNINGS, count=1))
    assert list(warnings.lines) == [lines[5992]]

    both = read(sshd, log, LogQuery(Which.ERRORS, text="Timeout"))
    assert list(both.lines) == [lines[5990]]


def test_a_missing_log_is_said(sshd: Sshd, tmp_path: Path) -> None:
    found = read(sshd, tmp_path / "nothing-here.log", LogQuery())
    assert found.problem == "does not exist" and found.lines == ()
    folder = read(sshd, tmp_path, LogQuery())
    assert folder.problem == "is a folder, not a file"
