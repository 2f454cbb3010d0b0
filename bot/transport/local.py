"""`transport: local`: the runbook's commands run on this machine, as subprocesses.

Same contract as SSH (bot/transport/base.py), so a procedure written once runs here too:
argv lists run as they are, `Shell` commands through `sh -c`; output is read as it arrives
and only its tail kept; a command that outlives its timeout is stopped together with every
process it started (each command gets its own session, hence its own process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bot.transport.base import (
    Command,
    CommandResult,
    CommandTimedOut,
    Shell,
    TransportError,
    UploadResult,
    command_line,
    log_command,
)
from bot.transport.files import CHUNK, sha256_file, temp_name
from bot.transport.output import OutputTail

log = logging.getLogger(__name__)

T = TypeVar("T")

TARGET = "local"
DEFAULT_COMMAND_TIMEOUT_S = 15 * 60.0
TERM_GRACE_S = 5.0  # after SIGTERM, how long a timed-out command gets before SIGKILL
# Once the command itself has exited, how long to keep reading output that a process it left
# in the background (a daemon started without redirecting its output) may still hold open.
DRAIN_GRACE_S = 1.0


# What a command run here inherits from the bot's environment: an allow-list, so that nothing
# the bot was given (SLACK_*, the CI token, the database URL, whatever else its orchestrator
# set) reaches a build script that prints its environment. TMPDIR, TZ, USER and LOGNAME are
# harmless and builds expect them.
INHERITED = frozenset({"PATH", "HOME", "LANG", "TMPDIR", "TZ", "USER", "LOGNAME"})
INHERITED_PREFIXES = ("LC_", "EVENTMESH_")
NEVER_INHERITED = frozenset({"EVENTMESH_DATABASE_URL", "EVENTMESH_DATABASE_URL_FILE"})


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command run on this machine: the allow-listed variables of the
    bot's own environment, plus `extra` (the environment's `deploy.env`).

    bot/settings.py already takes the secrets out of os.environ at start-up; this is the second
    lock on the same door: a build script that prints its environment must find nothing there
    that the bot did not mean it to have.
    """
    inherited = {
        name: value
        for name, value in os.environ.items()
        if (name in INHERITED or name.startswith(INHERITED_PREFIXES))
        and name not in NEVER_INHERITED
    }
    return {**inherited, **(extra or {})}


class LocalTransport:
    """This machine, as the runbook's procedures see a host."""

    def __init__(
        self,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.command_timeout_s = command_timeout_s
        self.environment = dict(environment or {})
        # Hashing and copying a 200 MB artifact takes seconds: not on the event loop, and not on
        # asyncio's small default executor either (the store's queries run there).
        self._files: ThreadPoolExecutor | None = None

    @property
    def target(self) -> str:
        return TARGET

    def __repr__(self) -> str:
        return "LocalTransport()"

    async def run(
        self,
        command: Command,
        *,
        cwd: str | None = None,
        timeout_s: float | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        shown = command_line(command)
        log_command(TARGET, command, cwd)
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        argv = ["sh", "-c", command.text] if isinstance(command, Shell) else list(command)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            transport, output = await loop.subprocess_exec(
                lambda: _Output(loop, stdin),
                *argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=child_environment(self.environment),
            )
        except OSError as exc:
            # What `sh` would have said: the result is a failed command, not a broken transport.
            return _not_started(shown, exc, cwd, time.monotonic() - started)
        try:
            try:
                async with asyncio.timeout(timeout):
                    # shielded: cancelling the wait must not cancel the future itself
                    status = await asyncio.shield(output.exited)
            except TimeoutError:
                await _stop_group(transport, output)
                log.info("%s: timed out after %gs: %s", TARGET, timeout, shown)
                raise CommandTimedOut(
                    TARGET, f"`{_short(shown)}` ran longer than {timeout:g}s and was stopped"
                ) from None
            except asyncio.CancelledError:
                await _stop_group(transport, output)
                raise
            # The rest of the output is on its way; a process the command left in the
            # background (a daemon started without redirecting its output) may hold the pipes
            # open for as long as it lives, so the wait for them is short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_GRACE_S):
                    await asyncio.shield(output.drained)
        finally:
            transport.close()  # our ends of the pipes; the process has exited by now
        duration = time.monotonic() - started
        log.debug("%s: exit %d in %.2fs: %s", TARGET, status, duration, shown)
        return CommandResult(
            TARGET, shown, status, output.stdout.text(), output.stderr.text(), duration
        )

    async def upload(
        self, local_path: Path, remote_path: str, *, sha256: str | None = None
    ) -> UploadResult:
        """Copy to `remote_path` (its directory is created), verified, or skip if already there."""
        started = time.monotonic()
        size, digest, skipped = await self._off_loop(
            _copy_verified, Path(local_path), remote_path, sha256
        )
        duration = time.monotonic() - started
        what = "already there" if skipped else "copied"
        log.debug("%s: %s -> %s %s", TARGET, local_path, remote_path, what)
        return UploadResult(TARGET, remote_path, size, digest, skipped, duration)

    async def close(self) -> None:
        if self._files is not None:
            self._files.shutdown(wait=False, cancel_futures=True)
            self._files = None

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        if self._files is None:
            self._files = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-files")
        return await asyncio.get_running_loop().run_in_executor(self._files, function, *args)


class _Output(asyncio.SubprocessProtocol):
    """Collects a command's output as it arrives and tells when the command has exited.

    asyncio's Process.wait() (Python 3.11) also waits until every pipe is closed, so a command
    that leaves a daemon holding its stdout would look like it never ends; `exited` is set by
    the child watcher when the process itself exits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, stdin: bytes | None) -> None:
        self.stdout, self.stderr = OutputTail(), OutputTail()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self._stdin = stdin
        self._open = {1, 2}
        self._transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport
        if self._stdin is not None:
            pipe = transport.get_pipe_transport(0)
            assert isinstance(pipe, asyncio.WriteTransport)
            # Buffered by the pipe transport and written as the command reads; a command that
            # exits without reading it all is its own business, not an error.
            pipe.write(self._stdin)
            pipe.close()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        (self.stdout if fd == 1 else self.stderr).add(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        assert self._transport is not None
        status = self._transport.get_returncode()
        if not self.exited.done() and status is not None:
            self.exited.set_result(status)


async def _stop_group(transport: asyncio.SubprocessTransport, output: _Output) -> None:
    """SIGTERM to the command's whole process group, SIGKILL if it is still there later."""
    group = transport.get_pid()  # the leader's pid is the group's id (start_new_session)
    _signal_group(group, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TERM_GRACE_S):
            await asyncio.shield(output.exited)
    # Children that outlived the leader, or ignore SIGTERM, are still in the group.
    _signal_group(group, signal.SIGKILL)
    await asyncio.shield(output.exited)


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _not_started(shown: str, exc: OSError, cwd: str | None, duration: float) -> CommandResult:
    if cwd is not None and exc.filename == cwd:
        status, problem = 2, f"cannot change directory to {cwd}: {exc.strerror}"
    elif isinstance(exc, FileNotFoundError):
        status, problem = 127, f"{exc.filename}: command not found"
    else:
        status, problem = 126, f"{exc.filename}: {exc.strerror}"
    return CommandResult(TARGET, shown, status, "", problem + "\n", duration)


def _short(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _copy_verified(source: Path, destination: str, known: str | None) -> tuple[int, str, bool]:
    """(size, sha256, skipped): copy through a temporary name, verify, rename into place.

    `known`: the sha256 the copy must have (else the one read while copying)."""
    target = Path(destination)
    try:
        size = source.stat().st_size
        if target.is_file() and target.stat().st_size == size:
            digest = known or sha256_file(source)
            if sha256_file(target) == digest:
                return size, digest, True
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(temp_name(destination))
        try:
            hashing = hashlib.sha256()
            with source.open("rb") as reader, temporary.open("wb") as writer:
                while chunk := reader.read(CHUNK):
                    hashing.update(chunk)
                    writer.write(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            shutil.copymode(source, temporary)
            digest = hashing.hexdigest()
            if known is not None and digest != known:
                raise TransportError(
                    TARGET,
                    f"{source} has sha256 {digest}, expected {known}: it changed since its "
                    f"sha256 was taken; {destination} was not replaced",
                )
            written = sha256_file(temporary)
            if written != digest:
                raise TransportError(
                    TARGET,
                    f"copy of {source} to {destination} is corrupt (sha256 {written}, expected "
                    f"{digest}); check the disk",
                )
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        where = exc.filename or destination
        raise TransportError(
            TARGET, f"cannot copy {source} to {destination}: {where}: {exc.strerror}"
        ) from None
    return size, digest, False
