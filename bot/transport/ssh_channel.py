"""One command on an open SSH channel, read and fed without blocking forever.

paramiko's recv_exit_status() waits forever once about 2 MiB of output is left unread, and a
client-side timeout does not stop the command on the host (FIELD-NOTES "SSH"). A
ChannelSession drains output while it feeds stdin, keeps only the output's tail, and gives up
at a deadline a little past the host's own `timeout -k`; a ChannelJob lets a cancelled caller
close the channel its thread is blocked on.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import threading
import time

import paramiko

from bot.transport.base import CommandTimedOut, TransportError
from bot.transport.files import CHUNK
from bot.transport.output import OutputTail

KILL_AFTER_S = 10  # `timeout -k`: SIGKILL this long after the SIGTERM at the deadline
CLIENT_GRACE_S = KILL_AFTER_S + 5  # the client waits this much past the deadline for the host
DRAIN_GRACE_S = 1.0  # after the exit status, for output a background process holds open


class ChannelSession:
    """One command on an open channel: feed its stdin, read its output as it arrives.

    Everything runs in the calling (executor) thread, and waits on the channel itself:
    select() on its pipe wakes on output or EOF; a send with a short channel timeout wakes as
    soon as the host opens its window. Nothing spins, and output is drained while stdin is
    fed, so a command that echoes its input back cannot deadlock against us.
    """

    def __init__(
        self, target: str, channel: paramiko.Channel, job: ChannelJob, shown: str, timeout_s: float
    ) -> None:
        self.target = target
        self.channel = channel
        self.job = job
        self.shown = shown
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s + CLIENT_GRACE_S
        self.stdout, self.stderr = OutputTail(), OutputTail()
        self._unread = bytearray()  # stdout not yet taken by read_line
        channel.settimeout(_SEND_WAIT_S)

    def __enter__(self) -> ChannelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def feed(self, data: bytes) -> bool:
        """Send to the command's stdin; False once the command has ended (what it did not read
        is dropped; finish() tells how it ended)."""
        view = memoryview(data)
        try:
            while view:
                self._drain()
                if self.channel.closed or self.channel.exit_status_ready():
                    return False
                self._check_deadline()
                try:
                    sent = self.channel.send(view[:CHUNK])
                except TimeoutError:
                    continue  # the window stayed shut for a moment: drain output, try again
                if sent == 0:
                    return False  # the channel is closing
                view = view[sent:]
        except (paramiko.SSHException, OSError) as exc:
            raise self.lost(exc) from None
        return True

    def ready_line(self) -> str | None:
        """The next line of stdout if it has already arrived; never waits."""
        try:
            self._drain()
        except (paramiko.SSHException, OSError) as exc:
            raise self.lost(exc) from None
        return self._take_line() if b"\n" in self._unread else None

    def read_line(self) -> str | None:
        """The next line of stdout (None if the command ended without one)."""
        try:
            while b"\n" not in self._unread:
                self._drain()
                if b"\n" in self._unread:
                    break
                if self.channel.eof_received or self.channel.closed:
                    return None
                self._check_deadline()
                select.select([self.channel], [], [], self.deadline - time.monotonic())
        except (paramiko.SSHException, OSError) as exc:
            raise self.lost(exc) from None
        return self._take_line()

    def _take_line(self) -> str:
        line, _, rest = bytes(self._unread).partition(b"\n")
        self._unread[:] = rest
        return line.decode("utf-8", errors="replace")

    def finish(self) -> int:
        """Close stdin, read everything, return the exit status (-1: killed by a signal)."""
        channel = self.channel
        try:
            channel.shutdown_write()
            exited_at: float | None = None
            while True:
                self._drain()
                if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    break
                now = time.monotonic()
                if exited_at is None and channel.exit_status_ready():
                    exited_at = now
                if exited_at is not None and now - exited_at >= DRAIN_GRACE_S:
                    break  # exited; what still holds the output open is a background process
                self._check_deadline()
                until = self.deadline if exited_at is None else exited_at + DRAIN_GRACE_S
                wait = max(0.0, min(until, self.deadline) - now)
                if channel.eof_received:
                    channel.status_event.wait(wait)  # all output is in; only the status is due
                else:
                    # Output and EOF wake the select; the exit status does not (a command that
                    # left a daemon holding its stdout sends one without EOF): look again soon.
                    select.select([channel], [], [], min(wait, _STATUS_RECHECK_S))
            self._drain()
        except (paramiko.SSHException, OSError) as exc:
            raise self.lost(exc) from None
        status = channel.recv_exit_status()
        if self.job.abandoned:
            raise self.lost(EOFError("cancelled"))
        transport = channel.get_transport()
        if status == -1 and (transport is None or not transport.is_active()):
            raise self.lost(EOFError("connection closed"))
        return status

    def close_quietly(self) -> None:
        """Best effort: close the command's stdin, and don't wait for it to end."""
        with contextlib.suppress(paramiko.SSHException, OSError):
            self.channel.shutdown_write()

    def lost(self, exc: BaseException) -> TransportError:
        if self.job.abandoned:
            return TransportError(self.target, f"`{short(self.shown)}` was cancelled")
        return TransportError(
            self.target,
            f"connection lost while running `{short(self.shown)}`: {one_line(exc) or 'closed'}",
        )

    def _drain(self) -> None:
        channel = self.channel
        while channel.recv_ready():
            data = channel.recv(CHUNK)
            self.stdout.add(data)
            if len(self._unread) < _LINE_LIMIT:
                self._unread += data
        while channel.recv_stderr_ready():
            self.stderr.add(channel.recv_stderr(CHUNK))

    def _check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise CommandTimedOut(
                self.target,
                f"`{short(self.shown)}` gave no result within "
                f"{self.timeout_s + CLIENT_GRACE_S:g}s (the host stops it after "
                f"{self.timeout_s:g}s; is the host still up?)",
            )


_STATUS_RECHECK_S = 0.25  # how often a command's exit status is looked for while output is open
_SEND_WAIT_S = 0.05  # how long one send waits for the host's window before output is drained
_LINE_LIMIT = 64 * 1024  # stdout kept for read_line (only the upload reads lines)


def set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ChannelJob:
    """One call's channel, so that cancelling the awaiting task can close it."""

    def __init__(self) -> None:
        self.abandoned = False
        self._channels: list[paramiko.Channel] = []
        self._lock = threading.Lock()

    def attach(self, channel: paramiko.Channel) -> None:
        with self._lock:
            self._channels.append(channel)
            abandoned = self.abandoned
        if abandoned:
            channel.close()

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            channels = list(self._channels)
        for channel in channels:
            channel.close()


def one_line(value: object) -> str:
    return " ".join(str(value).split())


def short(text: str, limit: int = 200) -> str:
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1] + "…"
