"""The bot's own workers, in three lanes, each bounded.

Bolt runs listeners on a small executor (5 threads in the sync app); a listener that keeps
working after its ack holds a slot, and the sixth slow command times out in Slack. So
listeners only parse, authorize and ack, and hand the work here.

- The short lane: asyncio tasks fed by a queue, a bound on how many run at once. A /health
  report, /deploy status, /rollback list take seconds.
- The press lane: the same, for button presses (Approve, Acknowledge, Cancel …) only, so a
  press never waits behind slash-command work however much of it is queued.
- The long lane: work that lasts minutes (a deploy, a 15-minute watch) runs as its own task,
  so twenty of them never take a slot a /health report needs.

Each lane holds a bounded amount of work (queued, or running for the long lane); past it a job
is refused with `Busy`, which says how long to wait, and the person who asked is told so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from bot.acks_first import ACKS_FIRST

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
Lane = Literal["short", "press", "long"]

QUEUE_LIMIT = 200  # jobs waiting in the short lane, and in the press lane
LONG_LIMIT = 200  # long jobs running at once (50 watches, deploys, diagnoses, …)
_SMOOTHING = 0.2  # weight of the newest job's duration in the lane's running mean


class Busy(Exception):
    """A lane is full; `retry_after_s` is about when it will have room."""

    def __init__(self, lane: Lane, retry_after_s: int) -> None:
        super().__init__(f"the {lane} lane is full; try again in {retry_after_s} s")
        self.lane = lane
        self.retry_after_s = retry_after_s


class _Queue:
    """One queued lane: its queue, its workers, and how long its jobs take (a running mean)."""

    def __init__(self, lane: Lane, size: int, limit: int) -> None:
        self.lane = lane
        self.size = size
        self.queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue(limit)
        self.workers: list[asyncio.Task[None]] = []
        self.mean_s = 1.0

    def start(self) -> None:
        if not self.workers:
            self.workers = [
                asyncio.create_task(self._work(), name=f"{self.lane}-worker-{i}")
                for i in range(self.size)
            ]

    def busy_for(self) -> int | None:
        """Seconds until there is room (None: there is room now)."""
        if not self.queue.full():
            return None
        return max(1, min(60, math.ceil(self.queue.qsize() / self.size * self.mean_s)))

    def put(self, name: str, job: Job) -> None:
        wait = self.busy_for()
        if wait is not None:
            raise Busy(self.lane, wait)
        self.queue.put_nowait((name, job))

    async def _work(self) -> None:
        while True:
            name, job = await self.queue.get()
            await ACKS_FIRST.turn()  # a burst's acks before its work
            started = time.monotonic()
            try:
                await _guard(name, job)
            finally:
                took = time.monotonic() - started
                self.mean_s += _SMOOTHING * (took - self.mean_s)
                self.queue.task_done()


class WorkerPool:
    def __init__(
        self,
        size: int = 16,
        *,
        press_size: int = 8,
        queue_limit: int = QUEUE_LIMIT,
        long_limit: int = LONG_LIMIT,
    ) -> None:
        self.size = size
        self._short = _Queue("short", size, queue_limit)
        self._press = _Queue("press", press_size, queue_limit)
        self._long: set[asyncio.Task[None]] = set()
        self.long_limit = long_limit

    def start(self) -> None:
        self._short.start()
        self._press.start()

    def busy_for(self, lane: Lane) -> int | None:
        """Seconds until `lane` takes a job (None: now), for a refusal before any work."""
        if lane == "long":
            return 30 if len(self._long) >= self.long_limit else None
        return self._queue(lane).busy_for()

    def submit(self, name: str, job: Job, *, lane: Lane = "short") -> None:
        """Queue a job; returns at once. Raises Busy when the lane is full. Jobs report their
        own failures (see dispatch)."""
        if lane == "long":
            wait = self.busy_for("long")
            if wait is not None:
                raise Busy("long", wait)
            task = asyncio.create_task(self._after_acks(name, job), name=f"long-{name}")
            self._long.add(task)
            task.add_done_callback(self._long.discard)
        else:
            self._queue(lane).put(name, job)

    async def _after_acks(self, name: str, job: Job) -> None:
        await ACKS_FIRST.turn()
        await _guard(name, job)

    def _queue(self, lane: Lane) -> _Queue:
        return self._press if lane == "press" else self._short

    @property
    def backlog(self) -> int:
        return self._short.queue.qsize() + self._press.queue.qsize()

    @property
    def long_running(self) -> int:
        return len(self._long)

    async def join(self) -> None:
        """Wait until every queued job has finished (the console waits before its next prompt).

        Long jobs are not waited for: they report as they go, like a deploy in Slack.
        """
        await self._short.queue.join()
        await self._press.queue.join()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let queued and running jobs finish for up to grace_s, then cancel the rest."""
        try:
            async with asyncio.timeout(grace_s):
                await self.join()
                if self._long:
                    await asyncio.wait(set(self._long))
        except TimeoutError:
            log.warning(
                "stopping with %d queued and %d long jobs unfinished", self.backlog, len(self._long)
            )
        tasks = [*self._short.workers, *self._press.workers, *self._long]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._short.workers = []
        self._press.workers = []
        self._long.clear()


async def _guard(name: str, job: Job) -> None:
    try:
        await job()
    except Exception:
        # Last line of defence: a job's own error handling failed. Keep the worker alive.
        log.exception("background job %s failed", name)
