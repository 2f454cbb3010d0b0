"""One message, posted once and edited in place as a procedure makes progress.

Slack allows roughly 50 chat.update calls a minute, so intermediate states are throttled:
an update that comes too soon is held, and sent once the interval has passed unless a newer
one replaced it — so a step that starts right after another and then runs for minutes still
shows as running. The final state is always sent, and nothing held is sent after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot.acks_first import ACKS_FIRST
from bot.slack.chat import ChatError, Conversation, Message, MessageRef

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL_S = 1.0

# A state, or a function that builds it: a 200-environment report is built only when sent.
State = Message | Callable[[], Message]


def _built(state: State) -> Message:
    return state() if callable(state) else state


class LiveMessage:
    def __init__(
        self,
        conversation: Conversation,
        *,
        ref: MessageRef | None = None,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conversation = conversation
        self.ref = ref
        self.min_interval_s = min_interval_s
        self._monotonic = monotonic
        self._posted = ref is not None
        self._last_sent: float | None = None
        self._held: State | None = None
        self._flush: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()
        self._finished = False

    async def show(self, message: State) -> None:
        """Show an intermediate state now, or as soon as the interval allows."""
        if not self._posted:
            await self._post(_built(message))
            return
        if self.ref is None or self._finished:
            # With no ref the user is answered privately: only the final state goes there.
            return
        if self._too_soon():
            self._held = message
            if self._flush is None or self._flush.done():
                assert self._last_sent is not None
                wait = self.min_interval_s - (self._monotonic() - self._last_sent)
                self._flush = asyncio.create_task(self._send_held_after(max(0.0, wait)))
            return
        self._held = None
        # Counted from now, not from when Slack answers: a state that comes while this one is
        # on its way is held like any other (a 1,000-environment report sent two updates
        # 20-70 ms apart, each a render of every line and a durable write).
        self._last_sent = self._monotonic()
        await self._send_progress(message)

    async def finish(self, message: Message) -> None:
        """Show the final state, always."""
        self._finished = True
        self._held = None
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        if not self._posted:
            await self._post(message)
        elif self.ref is not None:
            async with self._sending:
                await self._update(self.ref, message)
        elif self.conversation.response_url is not None:
            await self.conversation.chat.respond(self.conversation.response_url, message)

    async def _send_held_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        held, self._held = self._held, None
        if held is not None and not self._finished:
            await self._send_progress(held)

    async def _send_progress(self, message: State) -> None:
        assert self.ref is not None
        async with self._sending:
            if self._finished:
                return
            try:
                await ACKS_FIRST.turn()  # rendering a big report waits for a burst's acks
                await self._update(self.ref, _built(message))
            except ChatError as exc:
                # Progress is a courtesy; the procedure goes on and finish() tries again.
                log.warning("progress update of %s not shown: %s", self.ref, exc.error)

    def _too_soon(self) -> bool:
        return (
            self._last_sent is not None
            and self._monotonic() - self._last_sent < self.min_interval_s
        )

    async def _post(self, message: Message) -> None:
        self._posted = True
        self.ref = await self.conversation.post(message)
        self._last_sent = self._monotonic()

    async def _update(self, ref: MessageRef, message: Message) -> None:
        await self.conversation.chat.update(ref, message)
        self._last_sent = self._monotonic()
