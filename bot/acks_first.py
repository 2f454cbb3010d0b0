"""Acks go first: background work on the bot's loop waits while commands are being acked.

Slack gives an ack 3 seconds and users notice far less. In a burst (50 engineers type /health
at once in an incident) every command's ack competed on the one event loop with the work of
the commands acked before it — reports rendering, Slack posts, alert rounds, store writes —
and the last ack of the burst waited behind all of it (ack_latency --under-load: p99 128 ms
with only job starts waiting). Work that starts 100 ms later is noticed by nobody; so the
places where background work begins a step (a worker's job, an alert round, a Slack post, a
timer) call `turn()`, which returns once no ack has been pending for QUIET_S — and never
later than LONGEST_WAIT_S, so a steady stream of commands cannot starve the work.

The cyclic garbage collector waits too: it stops every thread while it runs, and with the
young generation collected every 20,000 allocations (bot/runtime.py) a collection of the
middle one scans up to ~200,000 objects — 10-20 ms, 15-90 ms on a busy machine, measured with
gc.callbacks during ack_latency --under-load, and almost never finding garbage (the bot's
objects die by reference counting). While acks are pending automatic collection is off; it
comes back when they are done, or after LONGEST_WAIT_S at the latest.

On a request's own way to its ack `turn()` returns at once (a context variable says so): a
handler that posts before it acks must not wait for its own ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from contextvars import ContextVar

QUIET_S = 0.02  # the requests of one burst arrive a few ms apart: stay shut between them
LONGEST_WAIT_S = 0.5

_before_ack: ContextVar[bool] = ContextVar("before_ack", default=False)


class AcksFirst:
    """Counts the requests on their way to an ack; `turn()` lets them pass first."""

    def __init__(self, quiet_s: float = QUIET_S, longest_wait_s: float = LONGEST_WAIT_S) -> None:
        self.quiet_s = quiet_s
        self.longest_wait_s = longest_wait_s
        self._pending = 0
        self._last_ack = -1e9  # time.monotonic() when the last pending request was acked
        self._open: asyncio.Event | None = None  # set when the waiters may go
        self._look: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collector_held: asyncio.TimerHandle | None = None  # gc.disable()d here

    def _on_this_loop(self) -> None:
        """Start afresh on a new event loop (tests run several, one after another)."""
        _Collector.release_if_overdue()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._release_collector()
            self._loop, self._pending, self._last_ack = loop, 0, -1e9
            self._open = self._look = None

    @property
    def pending(self) -> int:
        return self._pending

    def arrived(self) -> Callable[[], None]:
        """A request to ack came in: call what this returns once its ack is on its way (more
        calls do nothing)."""
        self._on_this_loop()
        if self._pending == 0:
            self._hold_collector()
        self._pending += 1
        _before_ack.set(True)
        released = False

        def acked() -> None:
            nonlocal released
            if released:
                return
            released = True
            _before_ack.set(False)
            if asyncio.get_running_loop() is not self._loop:
                return  # counted on a loop that is gone
            self._pending -= 1
            self._last_ack = time.monotonic()
            if self._pending == 0:
                self._release_collector()
                if self._open is not None:
                    self._look_later(self.quiet_s)

        return acked

    async def turn(self) -> None:
        """Return at once when no ack is pending or just done; else once the acks are done and
        QUIET_S has passed without one (or after LONGEST_WAIT_S)."""
        self._on_this_loop()
        if _before_ack.get():
            return
        if self._pending == 0 and time.monotonic() - self._last_ack >= self.quiet_s:
            return
        if self._open is None:
            self._open = asyncio.Event()
        if self._pending == 0:
            self._look_later(self.quiet_s - (time.monotonic() - self._last_ack))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.longest_wait_s):
                await self._open.wait()

    async def between(self) -> None:
        """Where long work on the loop can stop for a moment, every few milliseconds of it:
        requests that came in meanwhile are taken in (a turn of the loop), and if they are
        waiting for their acks, those go first."""
        await asyncio.sleep(0)
        await self.turn()

    def _hold_collector(self) -> None:
        if _Collector.hold(self.longest_wait_s):
            loop = asyncio.get_running_loop()
            self._collector_held = loop.call_later(self.longest_wait_s, self._release_collector)

    def _release_collector(self) -> None:
        if self._collector_held is not None:
            self._collector_held.cancel()
            self._collector_held = None
            _Collector.release()

    def _look_later(self, delay_s: float) -> None:
        if self._look is None:
            self._look = asyncio.get_running_loop().call_later(max(0.0, delay_s), self._look_now)

    def _look_now(self) -> None:
        self._look = None
        if self._open is None or self._pending:
            return  # nobody waits, or the last pending ack schedules the next look
        quiet_for = time.monotonic() - self._last_ack
        if quiet_for < self.quiet_s:  # another ack since this look was scheduled
            self._look_later(self.quiet_s - quiet_for)
            return
        self._open.set()
        self._open = None


class _Collector:
    """Automatic garbage collection, held off by the gates (one collector per process)."""

    held_until: float | None = None  # time.monotonic(); None: not held by a gate

    @classmethod
    def hold(cls, for_s: float) -> bool:
        """Off for at most for_s; False when it is off already (held, or someone's choice)."""
        if cls.held_until is not None or not gc.isenabled():
            return False
        gc.disable()
        cls.held_until = time.monotonic() + for_s
        return True

    @classmethod
    def release(cls) -> None:
        if cls.held_until is not None:
            cls.held_until = None
            gc.enable()

    @classmethod
    def release_if_overdue(cls) -> None:
        """A hold whose loop ended before its timer (a gate used in a test) ends here."""
        if cls.held_until is not None and time.monotonic() >= cls.held_until:
            cls.release()


# One per process: the bot runs one event loop, and every request and every background step
# in it shares the one CPU the loop has.
ACKS_FIRST = AcksFirst()
