"""The paced chat against the Slack fake over real HTTP: a burst is paced, not rate-limited into
loss; Retry-After is honoured; a page goes before a backlog of routine posts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.chat import ChatError, Message
from bot.slack.paced_chat import PacedChat, Priority
from bot.slack.web_api import SlackChat, create_web_client
from tests.support.slack_fake import SlackFake

TOKEN = "xoxb-paced-test"
CHANNEL = "C0ALERTS"
# The fake's per-channel limit, and the chat's pace a little slower than it: the fake measures
# arrivals, the chat spaces sends (Slack's limit is about 1 s; shorter here to keep it quick).
LIMIT_S = 0.2
PACE_S = 0.3


@pytest.fixture
def fake() -> Iterator[SlackFake]:
    with SlackFake(bot_token=TOKEN) as fake:
        yield fake


def bare_chat(fake: SlackFake) -> SlackChat:
    """A Slack chat with no retry handlers: every 429 reaches the caller (or the pacer)."""
    return SlackChat(AsyncWebClient(token=TOKEN, base_url=fake.api_url, timeout=10))


def texts(fake: SlackFake, channel: str = CHANNEL) -> list[str]:
    return [m["text"] for m in fake.channel_messages(channel)]


def test_a_burst_is_paced_to_the_channel_limit_and_nothing_is_lost(fake: SlackFake) -> None:
    fake.limit_rate("chat.postMessage", LIMIT_S)

    async def burst(chat_of: object) -> list[object]:
        posts = [f"alert {i}" for i in range(12)]
        return await asyncio.gather(
            *(chat_of.post(CHANNEL, Message(text)) for text in posts),  # type: ignore[attr-defined]
            return_exceptions=True,
        )

    # Unpaced, the channel's limit refuses most of a burst.
    naive = asyncio.run(burst(bare_chat(fake)))
    refused = [r for r in naive if isinstance(r, ChatError)]
    assert refused and all(r.error == "ratelimited" and r.retry_after_s == 1 for r in refused)

    fake.reset()
    fake.limit_rate("chat.postMessage", LIMIT_S)

    async def paced() -> list[object]:
        pacer = PacedChat(bare_chat(fake), post_interval_s=PACE_S, post_burst=1)
        try:
            return await burst(pacer.lane(Priority.ROUTINE))
        finally:
            await pacer.close()

    results = asyncio.run(paced())
    assert not any(isinstance(r, BaseException) for r in results)
    assert texts(fake) == [f"alert {i}" for i in range(12)]  # all of them, in order
    calls = fake.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [200] * 12  # never rate-limited


def test_retry_after_pauses_the_channel_and_the_page_goes_first(fake: SlackFake) -> None:
    # Slack rate-limits the first post, asking for 1 s; meanwhile a page is queued behind five
    # routine posts for the same channel.
    fake.fail_next("chat.postMessage", "ratelimited", retry_after=1)

    async def run() -> None:
        pacer = PacedChat(bare_chat(fake), post_interval_s=0.05, post_burst=1)
        routine, page = pacer.lane(Priority.ROUTINE), pacer.lane(Priority.PAGE)
        try:
            posts = [
                asyncio.create_task(routine.post(CHANNEL, Message(f"alert {i}"))) for i in range(6)
            ]
            await asyncio.sleep(0)  # the posts are queued and the first has gone out
            while pacer.waiting(CHANNEL) == 6:
                await asyncio.sleep(0.01)
            paging = asyncio.create_task(page.post(CHANNEL, Message("INC-1 page")))
            await asyncio.gather(*posts, paging)
        finally:
            await pacer.close()

    asyncio.run(run())
    calls = fake.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429] + [200] * 7
    # The rate-limited post went again first after the pause (it was first in line), then the
    # page, ahead of the five routine posts that had been waiting longer.
    assert texts(fake) == ["alert 0", "INC-1 page", *[f"alert {i}" for i in range(1, 6)]]
    assert calls[1].at - calls[0].at >= 0.95


def test_other_errors_go_back_to_the_caller_and_the_queue_goes_on(fake: SlackFake) -> None:
    fake.fail_next("chat.postMessage", "channel_not_found")

    async def run() -> list[object]:
        pacer = PacedChat(bare_chat(fake), post_interval_s=0.01)
        lane = pacer.lane(Priority.ROUTINE)
        try:
            return await asyncio.gather(
                lane.post("C0GONE", Message("lost")),
                lane.post("C0GONE", Message("next")),
                return_exceptions=True,
            )
        finally:
            await pacer.close()

    first, second = asyncio.run(run())
    assert isinstance(first, ChatError) and first.error == "channel_not_found"
    assert not isinstance(second, BaseException)
    assert texts(fake, "C0GONE") == ["next"]


def test_updates_dms_and_other_channels_never_wait_for_a_channels_pace(fake: SlackFake) -> None:
    async def run() -> None:
        chat = SlackChat(create_web_client(TOKEN, fake.api_url))
        # One post a minute in a channel: a second post there waits a minute.
        pacer = PacedChat(chat, post_interval_s=60, post_burst=1, update_burst=2)
        lane = pacer.lane(Priority.PAGE)
        try:
            ref = await lane.post(CHANNEL, Message("card"))
            waiting = asyncio.create_task(lane.post(CHANNEL, Message("second")))
            others = asyncio.gather(
                lane.update(ref, Message("card, updated")),
                lane.dm("U0ONCALL", Message("page")),
                lane.post("C0OTHER", Message("elsewhere")),
            )
            await asyncio.wait_for(others, timeout=20)  # far less than the channel's minute
            assert not waiting.done()
            waiting.cancel()
        finally:
            await pacer.close()

    asyncio.run(run())
    assert texts(fake) == ["card, updated"]
    assert texts(fake, "D0ONCALL") == ["page"]
    assert texts(fake, "C0OTHER") == ["elsewhere"]
