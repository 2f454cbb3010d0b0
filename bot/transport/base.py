"""How a command reaches a host: the contract the local and SSH transports share.

The runbook's procedures (deploy, rollback, resources) are written once against `Transport`
and run the same way on this machine (`transport: local`) or over SSH (`hosts:`).

Two kinds of command, kept apart on purpose:
- an argv list (`["tar", "-czf", path, "."]`): every word is quoted on the way to the remote
  shell, so values that came from a user (a version, a release id) can never become syntax;
- `Shell(...)`: a command line written by an operator in the config file (`build`, `restart`,
  `smoke`), run by `sh -c` as written. Nothing a user typed may ever go into a Shell.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Shell:
    """A trusted command line from the config file, run through `sh -c`."""

    text: str


Command = Sequence[str] | Shell


def command_line(command: Command) -> str:
    """The one string a remote shell runs (and what people are shown)."""
    if isinstance(command, Shell):
        return command.text
    return shlex.join(command)


# Every command a transport is asked to run, at DEBUG, one JSON object a line: what an audit of
# "nothing a user typed reaches a shell" reads (tests/test_input_fuzz_e2e.py does).
commands_log = logging.getLogger("bot.transport.commands")


def log_command(target: str, command: Command, cwd: str | None = None) -> None:
    if not commands_log.isEnabledFor(logging.DEBUG):
        return
    what: dict[str, object] = (
        {"shell": command.text} if isinstance(command, Shell) else {"argv": list(command)}
    )
    record = {"target": target, **what, "cwd": cwd}
    commands_log.debug("runs %s", json.dumps(record, ensure_ascii=False))


@dataclass(frozen=True)
class CommandResult:
    target: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def tail(self, lines: int = 20) -> str:
        """The last lines of output, stderr after stdout, for a failure report."""
        text = "\n".join(part for part in (self.stdout.rstrip(), self.stderr.rstrip()) if part)
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class UploadResult:
    target: str
    remote_path: str
    size: int
    sha256: str
    skipped: bool  # the host already held a file with this sha256
    duration_s: float


class TransportError(Exception):
    """A host could not be reached or a command could not be run to its end.

    str(err) is one line that names the host and what to do about it. `setup` names the
    config key to fix when the failure is the bot's setup rather than the host (a missing key
    file, a host not in known_hosts, a host name that does not resolve): a setup problem to
    name once, never an alert about the host.
    """

    def __init__(self, target: str, problem: str, *, setup: str | None = None) -> None:
        super().__init__(f"{target}: {problem}")
        self.target = target
        self.problem = problem
        self.setup = setup


class HostKeyRejected(TransportError):
    """The host's key is unknown or changed; nothing was sent to it."""


class ConnectFailed(TransportError):
    """Refused, unreachable, unresolvable, timed out connecting, or authentication failed."""


class CommandTimedOut(TransportError):
    """The command ran past its timeout; it was killed on the host too."""


class Transport(Protocol):
    """One host (or this machine), as the procedures see it."""

    @property
    def target(self) -> str:
        """'local' or 'user@host[:port]': how reports name this host."""
        ...

    async def run(
        self,
        command: Command,
        *,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run a command to its end (non-zero exit is a result, not an error).

        Raises TransportError when the host cannot be reached or the command outlives
        `timeout_s` (default: the config's ssh.command_timeout); never blocks the event loop.
        """
        ...

    async def upload(
        self, local_path: Path, remote_path: str, *, sha256: str | None = None
    ) -> UploadResult:
        """Copy a file to the host, verified by sha256 there; skipped when already present.

        `sha256`: what the file must hash to, when the caller knows (a deploy's package): the
        host's copy is checked against it, so a file changed since then is never put in place.
        """
        ...

    async def close(self) -> None: ...
