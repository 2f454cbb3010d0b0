"""Direct messages and acting as someone else: Slack's Web API (the fake) and the console."""

from __future__ import annotations

import asyncio
import io

from bot.slack.chat import Message
from bot.slack.console import Console, ConsoleChat
from bot.slack.web_api import SlackChat, create_web_client
from tests.conftest import BOT_TOKEN
from tests.support.slack_fake import SlackFake


def test_a_dm_opens_the_conversation_once_then_posts_there(slack: SlackFake) -> None:
    slack.reset()

    async def scenario() -> None:
        chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        first = await chat.dm("U0ONCALL", Message("INC-1 needs you"))
        second = await chat.dm("U0ONCALL", Message("INC-1 still needs you"))
        assert first.channel == second.channel == "D0ONCALL"

    asyncio.run(scenario())
    assert [c.args["users"] for c in slack.calls_to("conversations.open")] == ["U0ONCALL"]
    texts = [m["text"] for m in slack.channel_messages("D0ONCALL")]
    assert texts == ["INC-1 needs you", "INC-1 still needs you"]


def test_the_console_shows_a_dm_addressed_to_its_user() -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, color=False)

    async def scenario() -> None:
        ref = await chat.dm("U0ONCALL", Message("INC-1 needs you"))
        await chat.update(ref, Message("INC-1 acknowledged"))

    asyncio.run(scenario())
    screen = out.getvalue()
    assert "→ DM @U0ONCALL" in screen and "INC-1 needs you" in screen
    assert "→ DM @U0ONCALL updated" in screen and "INC-1 acknowledged" in screen


def test_the_console_acts_as_another_user() -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, color=False)

    async def scenario() -> str:
        console = Console(dispatcher=None, chat=chat, workers=None)  # type: ignore[arg-type]
        await console.handle_line("as U0APPROVER1")
        await console.handle_line("as @alice; rm -rf /")
        return console.user_id

    assert asyncio.run(scenario()) == "U0APPROVER1"
    assert "You are now U0APPROVER1." in out.getvalue()
    assert "is not a Slack user id" in out.getvalue()
