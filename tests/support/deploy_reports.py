"""Reading /deploy's messages out of the Slack fake, as a person would read them."""

from __future__ import annotations

from typing import Any

from tests.support.health_reports import report_text
from tests.support.slack_fake import SlackFake

DEPLOY_TIMEOUT_S = 90.0


def text_of(message: dict[str, Any]) -> str:
    """Fallback text, header, sections (text and fields) and context of a message, joined."""
    parts = [report_text(message)]
    for block in message.get("blocks") or []:
        if block.get("type") == "context":
            parts.extend(e.get("text", "") for e in block.get("elements", []))
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """{action_id: value} of the message's buttons."""
    found = {}
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                found[element["action_id"]] = element.get("value", "")
    return found


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


def final_deploy(
    slack: SlackFake, channel: str, *, index: int = 0, timeout: float = DEPLOY_TIMEOUT_S
) -> dict[str, Any]:
    """The channel's index-th deploy (or rollback) message, once it has its result."""

    def done(fake: SlackFake) -> dict[str, Any] | None:
        ours = [m for m in fake.channel_messages(channel) if is_deploy_message(m)]
        if len(ours) > index and finished(ours[index]):
            return ours[index]
        return None

    return slack.wait_for(done, timeout=timeout)


def thread(slack: SlackFake, channel: str, ts: str) -> list[dict[str, Any]]:
    return [m for m in slack.channel_messages(channel) if m.get("thread_ts") == ts]


def wait_in_thread(
    slack: SlackFake, channel: str, ts: str, words: str, timeout: float = DEPLOY_TIMEOUT_S
) -> dict[str, Any]:
    def found(fake: SlackFake) -> dict[str, Any] | None:
        return next((m for m in thread(fake, channel, ts) if words in text_of(m)), None)

    return slack.wait_for(found, timeout=timeout)


def responses_so_far(slack: SlackFake) -> int:
    with slack._cond:
        return len(slack.responses)


def wait_for_response(
    slack: SlackFake, words: str, *, since: int, timeout: float = 30.0
) -> dict[str, Any]:
    """An ephemeral answer (response_url) containing words, among those after `since`."""

    def found(fake: SlackFake) -> dict[str, Any] | None:
        return next((r for r in fake.responses[since:] if words in text_of(r)), None)

    return slack.wait_for(found, timeout=timeout)
