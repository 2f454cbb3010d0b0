"""The bot's own workers, in two lanes.

Bolt runs listeners on a small executor (5 threads in the sync app); a listener that keeps
working after its ack holds a slot, and the sixth slow command times out in Slack. So
listeners only parse, authorize and ack, and hand the work here.

- The short lane: asyncio tasks fed by a queue, a bound on how many run at once. A /health
  report or a button's update takes seconds.
- The long lane: work that lasts minutes (a deploy, a 15-minute watch) runs as its own task,
  so twenty of them never take a slot a /health report needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
Lane = Literal["short", "long"]


class WorkerPool:
    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._long: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"worker-{i}") for i in range(self.size)
            ]

    def submit(self, name: str, job: Job, *, lane: Lane = "short") -> None:
        """Queue a job; returns at once. Jobs report their own failures (see dispatch)."""
        if lane == "long":
            task = asyncio.create_task(self._guard(name, job), name=f"long-{name}")
            self._long.add(task)
            task.add_done_callback(self._long.discard)
        else:
            self._queue.put_nowait((name, job))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def long_running(self) -> int:
        return len(self._long)

    async def _work(self) -> None:
        while True:
            name, job = await self._queue.get()
            try:
                await self._guard(name, job)
            finally:
                self._queue.task_done()

    @staticmethod
    async def _guard(name: str, job: Job) -> None:
        try:
            await job()
        except Exception:
            # Last line of defence: a job's own error handling failed. Keep the worker alive.
            log.exception("background job %s failed", name)

    async def join(self) -> None:
        """Wait until every short job has finished (the console waits before its next prompt).

        Long jobs are not waited for: they report as they go, like a deploy in Slack.
        """
        await self._queue.join()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let queued and running jobs finish for up to grace_s, then cancel the rest."""
        try:
            async with asyncio.timeout(grace_s):
                await self._queue.join()
                if self._long:
                    await asyncio.wait(set(self._long))
        except TimeoutError:
            log.warning(
                "stopping with %d queued and %d long jobs unfinished",
                self._queue.qsize(),
                len(self._long),
            )
        tasks = [*self._workers, *self._long]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []
        self._long.clear()
