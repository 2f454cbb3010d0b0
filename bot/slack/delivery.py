"""What the outbox delivers through, and what a delivery comes to.

The `Sender` is the one-try transport (Slack's Web API in bot/slack/web_api.py, the console);
an `Outcome` is what a writer learns of its message: Sent (with where), Refused for good,
Pending (it waits in the outbox, and goes when it can) or Dropped (no longer wanted).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.slack.chat import ChatError, Message, MessageRef, Upload
from bot.store import Delivery

# Slack's answers that will not change by trying again: the target or the content is wrong.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "user_not_found",
        "user_disabled",
        "user_not_visible",
        "cannot_dm_bot",
        "users_list_not_supplied",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "restricted_action",
        "invalid_metadata_format",
        "expired",  # the outbox's own: past its usefulness
    }
)
SPENT_RESPONSE_URL = frozenset({"used_url", "expired_url"})


class Sender(Protocol):
    """What the outbox delivers through: Slack's Web API (SlackChat) or the console."""

    async def post(
        self,
        channel: str,
        message: Message,
        *,
        thread_ts: str | None = None,
        key: str | None = None,
    ) -> MessageRef: ...

    async def dm(self, user_id: str, message: Message, *, key: str | None = None) -> MessageRef: ...

    async def update(self, ref: MessageRef, message: Message) -> None: ...

    async def respond(self, response_url: str, message: Message) -> None: ...

    async def find_posted(
        self,
        key: str,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        thread_ts: str | None = None,
    ) -> MessageRef | None: ...

    async def upload(
        self, channel: str, upload: Upload, *, thread_ts: str | None = None
    ) -> str: ...

    async def find_uploaded(
        self, filename: str, *, channel: str, thread_ts: str | None = None
    ) -> MessageRef | None:
        """The bot's message sharing a file of this name among the conversation's (or the
        thread's) recent messages, if there is one: an upload whose answer was lost."""
        ...

    async def permalink(self, ref: MessageRef) -> str | None: ...

    async def publish_home(self, user_id: str, blocks: list[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class Sent:
    ref: MessageRef | None  # None for an update or a reply through a response_url


@dataclass(frozen=True)
class Refused:
    error: ChatError


@dataclass(frozen=True)
class Pending:
    """Not delivered yet: it waits in the outbox and goes when it can."""

    reason: str
    # Nothing wrong with this message: Slack is away, or another sender has it. Its writer
    # retries without a traceback (as opposed to one message's own trouble, say fatal_error).
    quiet: bool = False
    # False: tried without a record (the database was away), so nothing waits for it.
    recorded: bool = True


@dataclass(frozen=True)
class Dropped:
    reason: str


Outcome = Sent | Refused | Pending | Dropped
Renderer = Callable[[Delivery], Awaitable[Message | None]]
Hook = Callable[[Delivery], Awaitable[None]]


def permanent(exc: ChatError) -> bool:
    """Whether Slack's answer will stay the same however often the message is sent."""
    return exc.error in PERMANENT_ERRORS
