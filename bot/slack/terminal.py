"""The console's keyboard: lines from stdin without blocking the event loop, and Ctrl-C that
clears the line being typed instead of stopping the bot.

On a terminal the kernel keeps doing the line editing (backspace, Ctrl-U, Ctrl-W, echo), but
Ctrl-C is no longer the interrupt character: it is made an extra end-of-line character
(termios VEOL), so a half-typed line arrives at once, ending in INTERRUPT, and the console
decides what Ctrl-C means (clear the line; twice on an empty one, leave). Ctrl-Z and Ctrl-\\
keep their meaning, and the terminal's settings are put back when the reader closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from typing import TextIO

INTERRUPT = "\x03"  # Ctrl-C: what ends a line that Ctrl-C ended
_ENDINGS = (b"\n", INTERRUPT.encode())


def _ctrl_c_ends_lines(fd: int) -> list[object] | None:
    """Make Ctrl-C end the line on this terminal; the settings to restore, None if not a tty."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return None
    changed = [*saved[:6], list(saved[6])]
    try:
        disabled = bytes([os.fpathconf(fd, "PC_VDISABLE")])
    except (OSError, ValueError):
        disabled = b"\x00"  # Linux's _POSIX_VDISABLE
    changed[6][termios.VINTR] = disabled
    changed[6][termios.VEOL] = INTERRUPT.encode()
    termios.tcsetattr(fd, termios.TCSANOW, changed)
    return saved


class LineReader:
    """Lines from stdin without blocking the event loop (the bot keeps serving meanwhile).

    A terminal or pipe is watched by the loop itself, so shutdown never waits on a thread
    stuck in input(); a regular file (which the loop cannot watch) is read in a thread,
    where a read never blocks for long. No stream at all (standard input closed, so Python's
    sys.stdin is None) is end-of-file at once. A line that Ctrl-C ended comes with INTERRUPT
    at its end instead of a newline.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._loop = asyncio.get_running_loop()
        self._buffer = b""
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._fd: int | None = None
        self._saved_terminal: list[object] | None = None
        if stream is None:
            return
        try:
            fd = stream.fileno()
            self._loop.add_reader(fd, self._readable)
            self._fd = fd
        except (OSError, ValueError, PermissionError, NotImplementedError):
            self._fd = None
            return
        self._saved_terminal = _ctrl_c_ends_lines(fd)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:  # e.g. EIO when the terminal goes away
            chunk = b""
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True
            self._loop.remove_reader(self._fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _line_end(self) -> int:
        """Where the first complete line ends (its terminator included), or 0."""
        ends = [self._buffer.find(ending) for ending in _ENDINGS]
        found = [end for end in ends if end >= 0]
        return min(found) + 1 if found else 0

    async def readline(self) -> str | None:
        """The next line without its newline (a Ctrl-C line keeps its INTERRUPT); None at
        end-of-file."""
        if self._fd is None:
            if self.stream is None:
                return None
            line = await asyncio.to_thread(self.stream.readline)
            return line.removesuffix("\n") if line else None
        while not self._line_end() and not self._eof:
            self._waiter = self._loop.create_future()
            await self._waiter
        end = self._line_end() or len(self._buffer)  # at end-of-file: the last, unended line
        if not end:
            return None
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line.decode(errors="replace").removesuffix("\n")

    def close(self) -> None:
        if self._fd is None:
            return
        if not self._eof:
            self._loop.remove_reader(self._fd)
        if self._saved_terminal is not None:
            with contextlib.suppress(termios.error):  # the terminal went away meanwhile
                termios.tcsetattr(self._fd, termios.TCSANOW, self._saved_terminal)
