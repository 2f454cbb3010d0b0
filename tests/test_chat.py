"""Direct messages and acting as someone else: Slack's Web API (the fake) and the console."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from bot.slack.chat import ChatError, Conversation, Message, Upload
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


def test_an_upload_the_channel_refuses_is_explained_to_the_user_privately(
    slack: SlackFake,
) -> None:
    slack.reset()
    upload = Upload("chart.png", b"\x89PNG\r\n\x1a\n....", "Build durations")

    async def scenario() -> tuple[str | None, str | None]:
        chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        conversation = Conversation(chat, "C0OPS", "U1", slack.response_url())
        shared = await conversation.upload(upload)
        slack.fail_next("files.completeUploadExternal", "not_in_channel")
        refused = await conversation.upload(upload)
        return shared, refused

    shared, refused = asyncio.run(scenario())
    assert shared is not None and shared.startswith("F")
    assert refused is None
    (note,) = slack.responses
    assert note["text"] == "Build durations could not be shared in this channel (not_in_channel)."
    assert [f["id"] for f in slack.files_in("C0OPS")] == [shared]


def test_a_broken_upload_url_is_a_chat_error(slack: SlackFake) -> None:
    slack.reset()

    async def scenario() -> None:
        chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        # Announce one length, send another: the upload URL answers 400.
        original = chat.client.files_getUploadURLExternal

        async def wrong_length(**kwargs: object) -> object:
            return await original(**{**kwargs, "length": 3})

        chat.client.files_getUploadURLExternal = wrong_length  # type: ignore[method-assign]
        with pytest.raises(ChatError) as caught:
            await chat.upload("C0OPS", Upload("a.png", b"0123456789", "A"))
        assert caught.value.error == "upload_failed"

    asyncio.run(scenario())
    assert slack.files_in("C0OPS") == []


def test_the_console_saves_an_upload_and_prints_its_path(tmp_path: Path) -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, color=False, files_dir=tmp_path / "files")
    path = asyncio.run(chat.upload("CCONSOLE", Upload("chart.png", b"png bytes", "A chart")))
    assert Path(path).read_bytes() == b"png bytes"
    assert Path(path).parent == tmp_path / "files"
    assert f"📎 A chart: saved to {path}" in out.getvalue()
