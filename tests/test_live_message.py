"""One message edited in place, against the Slack fake over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.slack.chat import Conversation, Message
from bot.slack.live_message import LiveMessage
from bot.slack.web_api import SlackChat, create_web_client
from tests.conftest import BOT_TOKEN, new_channel
from tests.support.slack_fake import SlackFake


def updates_in(slack: SlackFake, channel: str) -> list[str]:
    """The texts of the chat.update calls to `channel`, in order."""
    return [c.args["text"] for c in slack.calls_to("chat.update") if c.args["channel"] == channel]


def live(slack: SlackFake, channel: str, **kwargs: object) -> LiveMessage:
    chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
    return LiveMessage(Conversation(chat, channel, "U1"), **kwargs)  # type: ignore[arg-type]


def test_a_refused_progress_update_does_not_stop_the_procedure(slack: SlackFake) -> None:
    channel = new_channel()

    async def scenario() -> None:
        message = live(slack, channel, min_interval_s=0)
        await message.show(Message("step 1"))
        slack.fail_next("chat.update", "message_not_found")
        await message.show(Message("step 2"))  # refused: logged, not raised
        await message.finish(Message("done"))

    asyncio.run(scenario())
    (final,) = slack.channel_messages(channel)
    assert final["text"] == "done"


def test_updates_closer_than_the_interval_are_held_but_the_final_state_always_goes(
    slack: SlackFake,
) -> None:
    channel = new_channel()
    now = [100.0]

    async def scenario() -> None:
        message = live(slack, channel, min_interval_s=1.0, monotonic=lambda: now[0])
        await message.show(Message("posted"))
        now[0] += 0.5
        await message.show(Message("too soon"))
        now[0] += 0.6
        await message.show(Message("in time"))
        await message.finish(Message("final"))

    asyncio.run(scenario())
    updates = updates_in(slack, channel)
    assert updates == ["in time", "final"]


def test_a_state_that_comes_while_an_update_is_on_its_way_is_held(slack: SlackFake) -> None:
    channel = new_channel()
    now = [100.0]

    async def scenario() -> None:
        message = live(slack, channel, min_interval_s=1.0, monotonic=lambda: now[0])
        await message.show(Message("posted"))
        now[0] += 1.5
        # The second comes before Slack has answered the first.
        await asyncio.gather(message.show(Message("in time")), message.show(Message("right after")))
        await message.finish(Message("final"))

    asyncio.run(scenario())
    updates = updates_in(slack, channel)
    assert updates == ["in time", "final"]


def test_a_state_given_as_a_function_is_built_only_when_it_is_sent(slack: SlackFake) -> None:
    # 200 results landing at once must not cost 200 renders of a 200-line report.
    channel = new_channel()
    now = [100.0]
    built: list[str] = []

    def state(text: str) -> Callable[[], Message]:
        def build() -> Message:
            built.append(text)
            return Message(text)

        return build

    async def scenario() -> None:
        message = live(slack, channel, min_interval_s=1.0, monotonic=lambda: now[0])
        await message.show(state("posted"))
        for i in range(50):
            await message.show(state(f"held {i}"))
        now[0] += 1.5
        await message.show(state("in time"))

    asyncio.run(scenario())
    assert built == ["posted", "in time"]
    assert slack.channel_messages(channel)[0]["text"] == "in time"


def test_when_the_bot_may_not_post_the_user_gets_the_final_state_privately(
    slack: SlackFake,
) -> None:
    channel = new_channel()

    async def scenario() -> None:
        chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        response_url = slack.response_url()
        message = LiveMessage(Conversation(chat, channel, "U1", response_url), min_interval_s=0)
        slack.fail_next("chat.postMessage", "not_in_channel")
        await message.show(Message("checking"))
        await message.show(Message("half way"))
        await message.finish(Message("final"))

    before = len(slack.responses)
    asyncio.run(scenario())
    private = [r.get("text") for r in slack.responses[before:]]
    assert private == ["checking", "final"]
    assert slack.channel_messages(channel) == []


def test_a_held_update_goes_out_when_the_interval_has_passed(slack: SlackFake) -> None:
    # A long step that starts right after the previous update must not stay invisible.
    channel = new_channel()

    async def scenario() -> None:
        message = live(slack, channel, min_interval_s=0.2)
        await message.show(Message("step 1 running"))
        await message.show(Message("step 1 done"))  # too soon: held
        await message.show(Message("step 2 running"))  # replaces the held one
        await asyncio.to_thread(
            slack.wait_for,
            lambda fake: [c for c in fake.calls_to("chat.update") if c.args["channel"] == channel],
        )
        await message.finish(Message("final"))

    asyncio.run(scenario())
    updates = updates_in(slack, channel)
    assert updates == ["step 2 running", "final"]
