"""The bot's own worker pool.

Bolt runs listeners on a small executor (5 threads in the sync app); a listener that keeps
working after its ack holds a slot, and the sixth slow command times out in Slack. So
listeners only parse, authorize and ack, and hand the work to this pool: asyncio tasks fed
by a queue, with a bound on how many jobs run at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class WorkerPool:
    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"worker-{i}") for i in range(self.size)
            ]

    def submit(self, name: str, job: Job) -> None:
        """Queue a job; returns at once. Jobs report their own failures (see dispatch)."""
        self._queue.put_nowait((name, job))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def _work(self) -> None:
        while True:
            name, job = await self._queue.get()
            try:
                await job()
            except Exception:
                # Last line of defence: a job's own error handling failed. Keep the worker alive.
                log.exception("background job %s failed", name)
            finally:
                self._queue.task_done()

    async def join(self) -> None:
        """Wait until every queued job has finished (the console waits before its next prompt)."""
        await self._queue.join()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let queued and running jobs finish for up to grace_s, then cancel the rest."""
        try:
            async with asyncio.timeout(grace_s):
                await self._queue.join()
        except TimeoutError:
            log.warning("stopping with %d background jobs unfinished", self._queue.qsize())
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
