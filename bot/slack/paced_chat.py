"""Posting at Slack's pace: a queue per destination, pages first, Retry-After honoured.

Slack takes about one chat.postMessage a second per channel (short bursts above that) and
chat.update is Tier 3 (about 50 a minute); past that it answers HTTP 429 with Retry-After. A
burst of alerts — 200 environments going down at once — sent all at once would be rate-limited,
and whatever the client's own three retries did not save would be lost. So alerts and
incidents post through this queue:

- one queue per destination (a channel, a user's direct messages) for posts, and one for all
  updates; different destinations never wait for each other;
- a token bucket per queue: `burst` calls at once, then one per interval (1 s per channel for
  posts, 1.2 s for updates: 50 a minute);
- two lanes: a page (an incident's card, its pages, its thread lines) is always taken before
  routine posts waiting for the same destination, so a page never waits behind a backlog of
  alerts (incidents and alerts may share a channel);
- a call Slack rate-limited all the same (`ratelimited`) pauses its queue for Retry-After and
  is tried again, first of its lane: late, never lost — or, for a caller that keeps its own
  record and retries (the outbox, bot/slack/outbox.py), goes back to it once the pause is set.
  Any other error goes back to the caller.

The outbox sends alerts and incidents through here; replies to commands keep no pace of their
own (each posts once in its own channel, and LiveMessage throttles its updates) beyond the
Retry-After pauses Slack asks for. Uploads and ephemeral answers pass straight through.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

from bot.acks_first import ACKS_FIRST
from bot.slack.chat import Chat, ChatError, Message, MessageRef, Upload

log = logging.getLogger(__name__)

T = TypeVar("T")

POST_INTERVAL_S = 1.0  # chat.postMessage: about one a second per channel
POST_BURST = 3
UPDATE_INTERVAL_S = 1.2  # chat.update, Tier 3: about 50 a minute for the whole app
UPDATE_BURST = 10
MIN_PAUSE_S = 0.2  # a Retry-After of 0 still means "not this instant"
UPDATES = "chat.update"


class Priority(IntEnum):
    PAGE = 0
    ROUTINE = 1


@dataclass(order=True)
class _Call:
    priority: int
    seq: int
    send: Callable[[], Awaitable[Any]] = field(compare=False)
    done: asyncio.Future[Any] = field(compare=False)
    retry_rate_limited: bool = field(default=True, compare=False)


class _Queue:
    """One destination's waiting calls and its token bucket."""

    def __init__(self, interval_s: float, burst: int, now: float) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now
        self.paused_until = 0.0
        self.waiting: list[_Call] = []
        self.worker: asyncio.Task[None] | None = None

    def wait_s(self, now: float) -> float:
        """How long until the next call may go."""
        if self.interval_s <= 0:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) / self.interval_s)
        self.stamp = now
        wait = max(0.0, self.paused_until - now)
        if self.tokens < 1:
            wait = max(wait, (1 - self.tokens) * self.interval_s)
        return wait


class PacedChat:
    """A Chat's posts and updates, queued and paced; `lane(priority)` is a Chat to hand out."""

    def __init__(
        self,
        chat: Chat,
        *,
        post_interval_s: float = POST_INTERVAL_S,
        post_burst: int = POST_BURST,
        update_interval_s: float = UPDATE_INTERVAL_S,
        update_burst: int = UPDATE_BURST,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chat = chat
        self.post_interval_s = post_interval_s
        self.post_burst = post_burst
        self.update_interval_s = update_interval_s
        self.update_burst = update_burst
        self._monotonic = monotonic
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count()

    def lane(self, priority: Priority) -> Chat:
        return PacedLane(self, priority)

    def waiting(self, destination: str | None = None) -> int:
        """Calls queued (for one destination, or in all)."""
        queues = [self._queues.get(destination)] if destination else self._queues.values()
        return sum(len(queue.waiting) for queue in queues if queue is not None)

    async def close(self) -> None:
        """Stop the queues; calls still waiting fail with CancelledError."""
        workers = [q.worker for q in self._queues.values() if q.worker is not None]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for queue in self._queues.values():
            for call in queue.waiting:
                call.done.cancel()
            queue.waiting.clear()

    def pause(self, destination: str, seconds: float) -> None:
        """Send nothing more to destination for a while (Slack asked, on a call made here)."""
        queue = self._queue(destination)
        queue.paused_until = max(queue.paused_until, self._monotonic() + seconds)

    def _queue(self, destination: str) -> _Queue:
        queue = self._queues.get(destination)
        if queue is None:
            interval, burst = (
                (self.update_interval_s, self.update_burst)
                if destination == UPDATES
                else (self.post_interval_s, self.post_burst)
            )
            queue = self._queues[destination] = _Queue(interval, burst, self._monotonic())
        return queue

    async def call(
        self,
        destination: str,
        priority: Priority,
        send: Callable[[], Awaitable[T]],
        *,
        retry_rate_limited: bool = True,
    ) -> T:
        """Queue one call to Slack for destination; returns its result once it went.

        A call Slack rate-limits is tried again after Retry-After, or with
        `retry_rate_limited` False raises its ChatError once the pause is set."""
        queue = self._queue(destination)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        call = _Call(int(priority), next(self._seq), send, done, retry_rate_limited)
        heapq.heappush(queue.waiting, call)
        if queue.worker is None or queue.worker.done():
            queue.worker = asyncio.create_task(self._drain(destination, queue), name=destination)
        # A caller that gives up cancels `done`, and the queue skips its call.
        return await done

    async def _drain(self, destination: str, queue: _Queue) -> None:
        while queue.waiting:
            wait = queue.wait_s(self._monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # a page may have come meanwhile: look again
            call = heapq.heappop(queue.waiting)
            if call.done.done():
                continue
            queue.tokens -= 1
            try:
                await ACKS_FIRST.turn()  # a burst's acks before the posts (bot/acks_first.py)
                result = await call.send()
            except ChatError as exc:
                if exc.error != "ratelimited" and exc.status != 429:
                    _settle(call, exc)
                    continue
                pause = max(MIN_PAUSE_S, exc.retry_after_s or 1.0)
                queue.paused_until = self._monotonic() + pause
                # Debug only: a long rate limit is one line each way in the outbox's log.
                log.debug(
                    "Slack rate-limited %s: pausing it %.1f s (%d waiting)",
                    destination,
                    pause,
                    len(queue.waiting) + 1,
                )
                if not call.retry_rate_limited:
                    _settle(call, exc)
                    continue
                heapq.heappush(queue.waiting, call)  # same place: first of its lane again
            except Exception as exc:
                _settle(call, exc)
            else:
                if not call.done.done():
                    call.done.set_result(result)


def _settle(call: _Call, exc: BaseException) -> None:
    if not call.done.done():
        call.done.set_exception(exc)


class PacedLane:
    """The Chat protocol over a PacedChat, at one priority."""

    def __init__(self, paced: PacedChat, priority: Priority) -> None:
        self.paced = paced
        self.priority = priority

    async def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None
    ) -> MessageRef:
        chat = self.paced.chat
        return await self.paced.call(
            channel, self.priority, lambda: chat.post(channel, message, thread_ts=thread_ts)
        )

    async def update(self, ref: MessageRef, message: Message) -> None:
        chat = self.paced.chat
        await self.paced.call(UPDATES, self.priority, lambda: chat.update(ref, message))

    async def dm(self, user_id: str, message: Message) -> MessageRef:
        chat = self.paced.chat
        return await self.paced.call(
            f"@{user_id}", self.priority, lambda: chat.dm(user_id, message)
        )

    async def respond(self, response_url: str, message: Message) -> None:
        await self.paced.chat.respond(response_url, message)

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        return await self.paced.chat.upload(channel, upload, thread_ts=thread_ts)
