"""Talking to the real bot the way people in Slack do, so an end-to-end test reads like the chat.

    chat = Conversation(bot)                         # or the `chat` fixture (tests/conftest.py)
    asked = chat.as_(DEPLOYER).say("/deploy dev 5.0.0")
    run = asked.message(":hourglass_flowing_sand: *Build*")      # what it posted, as it goes on
    other = chat.as_(OTHER_DEPLOYER).say("/deploy dev 5.0.1")
    other.private("dev is locked by")                            # answered to them alone
    run.press("Cancel", as_=DEPLOYER).private("Cancel requested")
    run.thread_line("failed")                                    # a reply in its thread

The bookkeeping a test would otherwise repeat is kept here: a `Reply` knows its channel, its
response_url (so `private` finds the answers to this very command or click, nothing earlier)
and the newest message at the time it was sent (so `message` finds what was posted after it);
a `Message` knows its channel and ts and reads itself from the fake each time; a press finds
its button in the message as the fake has it now and sends its value and its actions block's
block_id, as Slack does. Every command and click must be acknowledged with HTTP 200 within
Slack's deadline (past it, Slack shows the user an error), and each is checked for that.

Everything waits on conditions (SlackFake.wait_for), never on time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from tests.support.health_reports import SLACK_ACK_DEADLINE_S, report_text
from tests.support.slack_fake import SlackFake

if TYPE_CHECKING:  # conftest imports this module for its `chat` fixture
    from tests.conftest import BotProcess, Sent

WAIT_S = 90.0  # the slowest thing waited on is a deploy over SSH on a busy machine
# Slack gives an ephemeral message a ts in the click's payload that no API can look up; the
# fake keeps none, and the bot never reads it back, so any ts will do.
EPHEMERAL_TS = "1.0"

# What a wanted message says (words in its text), a test of the message, or None: any.
Matches: TypeAlias = str | Callable[[dict[str, Any]], object] | None


def text_of(message: dict[str, Any]) -> str:
    """Fallback text, header, sections (text and fields) and context of a message, joined."""
    parts = [report_text(message)]
    for block in message.get("blocks") or []:
        if block.get("type") == "context":
            parts.extend(e.get("text", "") for e in block.get("elements", []))
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """{action_id: value} of the message's buttons."""
    return {button.action_id: button.value for button in _buttons(message)}


def dm_of(user: str) -> str:
    """The channel id of the bot's direct messages with user (as the fake names it)."""
    return "D" + user[1:]


class Conversation:
    """The real bot (over signed HTTP) and the Slack fake it answers into."""

    def __init__(self, bot: BotProcess) -> None:
        self.bot = bot

    @property
    def slack(self) -> SlackFake:
        return self.bot.slack

    def as_(self, user: str) -> Person:
        return Person(self, user)


@dataclass(frozen=True)
class Person:
    chat: Conversation
    user: str

    def say(self, line: str, *, in_: str | None = None) -> Reply:
        """Send a slash command line ("/deploy staging 1.0"), in a channel of its own unless
        given one, exactly as Slack would."""
        command, _, text = line.partition(" ")
        since = _newest_ts(self.chat.slack)
        sent = self.chat.bot.command(command, text, user_id=self.user, channel=in_)
        what = f"{line[:60]!r} by {self.user} in {sent.channel}"
        return Reply(self.chat, self.user, _acknowledged(sent, what), since, what)


@dataclass(frozen=True)
class Reply:
    """What a command or a click led to: its acknowledgement, private answers and messages."""

    chat: Conversation
    user: str
    sent: Sent
    since: tuple[int, int]  # the newest message's ts when it was sent
    what: str  # the command line or the button pressed, by whom and where: for failures

    @property
    def channel(self) -> str:
        return self.sent.channel

    @property
    def answer(self) -> dict[str, Any]:
        """The answer the acknowledgement itself carried (a command's refusal or usage)."""
        body: dict[str, Any] = self.sent.response.json()
        return body

    def private(self, words: str, *, timeout: float = WAIT_S) -> Message:
        """The private answer containing words, sent later to this request's response_url."""
        return private_among([self], words, timeout=timeout)

    def message(
        self, matches: Matches = None, *, in_: str | None = None, timeout: float = WAIT_S
    ) -> Message:
        """The first message (not a thread reply) posted after this request, in its channel
        or in_, that matches."""
        channel = in_ or self.channel

        def after(fake: SlackFake) -> dict[str, Any] | None:
            return next(
                (
                    m
                    for m in fake.channel_messages(channel)
                    if "thread_ts" not in m and _ts(m["ts"]) > self.since and _match(m, matches)
                ),
                None,
            )

        after.__qualname__ = f"a message in {channel} after {self} {_what(matches)}"
        seen = self.chat.slack.wait_for(after, timeout=timeout)
        return Message(self.chat, channel, seen["ts"], seen)

    def posted(self) -> list[dict[str, Any]]:
        """Every message in its channel now (in a channel of its own: all it led to there)."""
        return self.chat.slack.channel_messages(self.channel)

    def __str__(self) -> str:
        return self.what


def private_among(replies: Sequence[Reply], words: str, *, timeout: float = WAIT_S) -> Message:
    """A private answer containing words, to any of replies (e.g. presses sent at once)."""
    urls = {reply.sent.response_url: reply for reply in replies}

    def answered(fake: SlackFake) -> tuple[Reply, dict[str, Any]] | None:
        return next(
            (
                (urls[r["url"]], r)
                for r in fake.responses
                if r["url"] in urls and words in text_of(r)
            ),
            None,
        )

    answered.__qualname__ = f"a private answer {words!r} to {', '.join(map(str, replies))}"
    reply, seen = replies[0].chat.slack.wait_for(answered, timeout=timeout)
    return Message(reply.chat, reply.channel, None, seen)


@dataclass(frozen=True)
class Message:
    """A message the bot posted (channel and ts), or a private answer (ts None: it never
    changes, and nobody else sees it). `seen` is how it read when found."""

    chat: Conversation
    channel: str
    ts: str | None
    seen: dict[str, Any]

    @property
    def now(self) -> dict[str, Any]:
        """The message as the fake has it now (updates applied)."""
        if self.ts is None:
            return self.seen
        messages = self.chat.slack.channel_messages(self.channel)
        now = next((m for m in messages if m["ts"] == self.ts), None)
        assert now is not None, f"{self} is gone from the fake (was it reset?)"
        return now

    @property
    def text(self) -> str:
        return text_of(self.now)

    @property
    def buttons(self) -> dict[str, str]:
        return buttons(self.now)

    def button(self, label: str) -> Button:
        """The button shown now with this text (or action_id), to press now or later."""
        shown = _buttons(self.now)
        found = [b for b in shown if label in (b.label, b.action_id)]
        assert len(found) == 1, f"no single {label!r} button in {self}: {shown}"
        return Button(self.chat, self.channel, self.ts, *found[0])

    def press(self, label: str, *, as_: str) -> Reply:
        """Click the button with this text (or action_id) as the user as_."""
        return self.button(label).press(as_)

    def when(self, matches: Matches, *, timeout: float = WAIT_S) -> dict[str, Any]:
        """The message as it reads once it matches (it is updated in place)."""

        def reads(fake: SlackFake) -> dict[str, Any] | None:
            now = self.now
            return now if _match(now, matches) else None

        reads.__qualname__ = f"{self} {_what(matches)}"
        return self.chat.slack.wait_for(reads, timeout=timeout)

    def thread(self) -> list[dict[str, Any]]:
        """The replies in its thread now."""
        messages = self.chat.slack.channel_messages(self.channel)
        return [m for m in messages if self.ts is not None and m.get("thread_ts") == self.ts]

    def thread_line(self, words: str, *, timeout: float = WAIT_S) -> Message:
        """The first reply in its thread containing words."""

        def replied(fake: SlackFake) -> dict[str, Any] | None:
            return next((m for m in self.thread() if words in text_of(m)), None)

        replied.__qualname__ = f"a reply {words!r} in the thread of {self}"
        seen = self.chat.slack.wait_for(replied, timeout=timeout)
        return Message(self.chat, self.channel, seen["ts"], seen)

    def __str__(self) -> str:
        where = f"message {self.ts}" if self.ts else "private answer"
        return f"the {where} in {self.channel} ({self.seen.get('text', '')[:60]!r})"


class Shown(NamedTuple):
    """A button as a message shows it."""

    label: str
    action_id: str
    value: str
    block_id: str  # its actions block's: Slack sends it with the click


def _buttons(message: dict[str, Any]) -> list[Shown]:
    return [
        Shown(
            str(element.get("text", {}).get("text", "")),
            str(element["action_id"]),
            str(element.get("value", "")),
            str(block.get("block_id", "")),
        )
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements", [])
        if element.get("type") == "button"
    ]


@dataclass(frozen=True)
class Button:
    """A button as a message showed it: pressing it later is pressing a message left open."""

    chat: Conversation
    channel: str
    message_ts: str | None
    label: str
    action_id: str
    value: str
    block_id: str

    def press(self, as_: str) -> Reply:
        since = _newest_ts(self.chat.slack)
        sent = self.chat.bot.press(
            self.action_id,
            self.value,
            channel=self.channel,
            message_ts=self.message_ts or EPHEMERAL_TS,
            user_id=as_,
            block_id=self.block_id,
        )
        what = f"{self.label!r} pressed by {as_} in {self.channel}"
        return Reply(self.chat, as_, _acknowledged(sent, what), since, what)


def _acknowledged(sent: Sent, what: str) -> Sent:
    """Slack waits SLACK_ACK_DEADLINE_S for HTTP 200, then shows the user an error."""
    status, seconds = sent.response.status_code, sent.seconds
    assert status == 200 and seconds < SLACK_ACK_DEADLINE_S, (
        f"{what}: acknowledged with HTTP {status} after {seconds:.2f}s"
    )
    return sent


def _match(message: dict[str, Any], matches: Matches) -> bool:
    if matches is None:
        return True
    if isinstance(matches, str):
        return matches in text_of(message)
    return bool(matches(message))


def _what(matches: Matches) -> str:
    if matches is None:
        return ""
    if isinstance(matches, str):
        return f"saying {matches!r}"
    return f"that is {getattr(matches, '__name__', matches)}"


def _ts(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _newest_ts(slack: SlackFake) -> tuple[int, int]:
    """The ts of the newest message in any channel; (0, 0) if there is none."""

    def newest(fake: SlackFake) -> tuple[tuple[int, int]]:
        # wait_for reads under the fake's lock and returns at once: a 1-tuple is truthy.
        return (max((_ts(ts) for _, ts in fake.messages), default=(0, 0)),)

    return slack.wait_for(newest)[0]
