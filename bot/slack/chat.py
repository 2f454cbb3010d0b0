"""What the bot says and where: messages, message references, and the Chat protocol.

Handlers and reports talk to a Chat; Slack's Web API and the local console each implement
it, so the console runs the very same handlers as Slack.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """Block Kit blocks plus the plain-text fallback Slack shows in notifications."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class MessageRef:
    channel: str
    ts: str


@dataclass(frozen=True)
class Upload:
    """A file to share in a conversation (a chart): its name, bytes and title."""

    filename: str
    content: bytes
    title: str


# Errors of the way to Slack rather than answers from it (bot/slack/web_api.py raises them).
CONNECTION_REFUSED = "connection_refused"  # nothing was sent
CONNECTION_LOST = "connection_lost"  # sent, and the answer never came: it may have happened
TIMED_OUT = "timed_out"  # likewise
RATELIMITED = "ratelimited"


class ChatError(Exception):
    """The chat refused a message; `error` is Slack's error code (e.g. not_in_channel), or one
    of the transport's own (connection_refused, connection_lost, timed_out).

    `retry_after_s` is Slack's Retry-After when it rate-limited the call (`ratelimited`);
    `status` the HTTP status Slack answered with; `in_doubt` says the call may have been
    carried out all the same (the answer was lost, or Slack failed half-way with a 5xx).
    """

    def __init__(
        self,
        error: str,
        retry_after_s: float | None = None,
        *,
        status: int | None = None,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after_s = retry_after_s
        self.status = status
        self.in_doubt = in_doubt

    @property
    def outage(self) -> bool:
        """Slack unreachable or pushing back (connection failures, 5xx, rate limits): nothing
        said about this message itself, so it goes again later."""
        return (
            self.error in (CONNECTION_REFUSED, CONNECTION_LOST, TIMED_OUT, RATELIMITED)
            or self.status == 429
            or (self.status or 0) >= 500
        )

    def describe(self) -> str:
        """The cause in words, for a log line or a late message: "HTTP 503", "connection
        refused", "rate limited, Retry-After 5 s"."""
        if self.error == RATELIMITED or self.status == 429:
            after = f", Retry-After {self.retry_after_s:g} s" if self.retry_after_s else ""
            return f"rate limited (HTTP {self.status or 200}{after})"
        if self.error == CONNECTION_REFUSED:
            return "connection refused"
        if self.error == CONNECTION_LOST:
            return "connection closed before the answer"
        if self.error == TIMED_OUT:
            return "no answer in time"
        if (self.status or 0) >= 500:
            return f"HTTP {self.status}"
        return self.error


class Chat(Protocol):
    async def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None
    ) -> MessageRef: ...

    async def update(self, ref: MessageRef, message: Message) -> None: ...

    async def dm(self, user_id: str, message: Message) -> MessageRef:
        """Post in the user's direct conversation with the bot (a page, a reminder)."""
        ...

    async def respond(self, response_url: str, message: Message) -> None:
        """Answer only the user who asked (Slack's response_url, ephemeral)."""
        ...

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        """Share a file in a channel; returns where it went (Slack's file id, a saved path)."""
        ...

    async def permalink(self, ref: MessageRef) -> str | None:
        """A link to the message (a lock refusal points at the deploy holding it), if any."""
        ...

    async def publish_home(self, user_id: str, blocks: list[dict[str, Any]]) -> None:
        """Show `blocks` as the user's App Home tab (Slack's views.publish), replacing it."""
        ...


@dataclass(frozen=True)
class Asked:
    """The command or button press the messages being sent answer (see `answering`)."""

    name: str
    text: str
    user_id: str
    channel_id: str
    response_url: str | None = None

    def __str__(self) -> str:
        said = f"{self.name} {self.text}".strip()
        return f"{said[:120]} by {self.user_id} in {self.channel_id}"


# Set by the dispatcher while a handler and its work run: what goes out meanwhile is a reply,
# useful for a while (the outbox drops it after that, saying which command it answered).
answering: ContextVar[Asked | None] = ContextVar("answering", default=None)


@dataclass
class Conversation:
    """Where one command's replies go: its channel, or, failing that, the asking user alone."""

    chat: Chat
    channel_id: str
    user_id: str
    response_url: str | None = None

    async def post(self, message: Message) -> MessageRef | None:
        """Post in the channel; if the bot may not post there, answer the user privately.

        Returns None in the second case: there is no message to edit afterwards.
        """
        try:
            return await self.chat.post(self.channel_id, message)
        except ChatError:
            if self.response_url is None:
                raise
            await self.chat.respond(self.response_url, message)
            return None

    async def upload(self, upload: Upload, *, thread_ts: str | None = None) -> str | None:
        """Share a file in the channel; if the bot may not, tell the user privately why.

        Returns where the file went, or None when it could not be shared.
        """
        try:
            return await self.chat.upload(self.channel_id, upload, thread_ts=thread_ts)
        except ChatError as exc:
            if self.response_url is None:
                raise
            note = f"{upload.title} could not be shared in this channel ({exc.error})."
            await self.chat.respond(self.response_url, Message(note))
            return None
