"""Reading /deploy's and /rollback's messages out of the Slack fake, as a person would read them.

`text_of` and `buttons` live in tests/support/conversation.py and are imported from here too.
"""

from __future__ import annotations

from typing import Any

from tests.support.conversation import Message, Reply, buttons, text_of
from tests.support.slack_fake import SlackFake

DEPLOY_TIMEOUT_S = 90.0


def is_deploy_message(message: dict[str, Any]) -> bool:
    blocks = message.get("blocks") or []
    if not blocks or blocks[0].get("type") != "header" or "thread_ts" in message:
        return False
    title = blocks[0]["text"]["text"]
    return title.startswith(("Deploy ", "Dry run: ", "Roll back ", "Back up "))


def finished(message: dict[str, Any]) -> bool:
    # While it runs the fallback says what runs ("…") and a Cancel button shows; at the end
    # the fallback is the result's summary.
    return not message.get("text", "").endswith("…") and "deploy_cancel" not in buttons(message)


def run_of(reply: Reply) -> Message:
    """The deploy (rollback, backup) message a command or click posted; `finished` tells
    when it has its result: `run_of(reply).when(finished)`."""
    return reply.message(is_deploy_message, timeout=DEPLOY_TIMEOUT_S)


def final_deploy(
    slack: SlackFake, channel: str, timeout: float = DEPLOY_TIMEOUT_S
) -> dict[str, Any]:
    """The channel's first deploy (or rollback) message, once it has its result."""

    def done(fake: SlackFake) -> dict[str, Any] | None:
        ours = next((m for m in fake.channel_messages(channel) if is_deploy_message(m)), None)
        return ours if ours is not None and finished(ours) else None

    return slack.wait_for(done, timeout=timeout)


def thread(slack: SlackFake, channel: str, ts: str) -> list[dict[str, Any]]:
    return [m for m in slack.channel_messages(channel) if m.get("thread_ts") == ts]


def wait_in_thread(
    slack: SlackFake, channel: str, ts: str, words: str, timeout: float = DEPLOY_TIMEOUT_S
) -> dict[str, Any]:
    def found(fake: SlackFake) -> dict[str, Any] | None:
        return next((m for m in thread(fake, channel, ts) if words in text_of(m)), None)

    return slack.wait_for(found, timeout=timeout)
