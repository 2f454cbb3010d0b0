"""One message, posted once and edited in place as a procedure makes progress.

Slack allows roughly 50 chat.update calls a minute, so intermediate states are throttled:
an update that comes too soon is held, and only the latest held one is sent. The final
state is always sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.slack.chat import ChatError, Conversation, Message, MessageRef

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL_S = 1.0


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

    async def show(self, message: Message | Callable[[], Message]) -> None:
        """Show an intermediate state, unless the last one went out too recently.

        Pass a function that builds the message to build it only when it is shown.
        """
        if not self._posted:
            await self._post(message() if callable(message) else message)
        elif self.ref is not None and not self._too_soon():
            try:
                await self._update(self.ref, message() if callable(message) else message)
            except ChatError as exc:
                # Progress is a courtesy; the procedure goes on and finish() tries again.
                log.warning("progress update of %s not shown: %s", self.ref, exc.error)
        # With no ref the user is answered privately: only the final state goes there.

    async def finish(self, message: Message) -> None:
        """Show the final state, always."""
        if not self._posted:
            await self._post(message)
        elif self.ref is not None:
            await self._update(self.ref, message)
        elif self.conversation.response_url is not None:
            await self.conversation.chat.respond(self.conversation.response_url, message)

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
