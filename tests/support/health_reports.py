"""Reading the bot's /health reports out of the Slack fake, as a person would read them."""

from __future__ import annotations

from typing import Any

from tests.support.slack_fake import SlackFake

SLACK_ACK_DEADLINE_S = 3.0  # Slack shows the user an error past this, and does not retry


def final_report(slack: SlackFake, channel: str) -> dict[str, Any]:
    """The channel's health report once complete: the Check again button shows last."""

    def complete(fake: SlackFake) -> dict[str, Any] | None:
        for message in fake.channel_messages(channel):
            if any(block.get("type") == "actions" for block in message.get("blocks") or []):
                return message
        return None

    return slack.wait_for(complete)


def report_text(message: dict[str, Any]) -> str:
    """The fallback text, header and sections (their text and fields) of a message, joined."""
    parts = [message.get("text", "")]
    for block in message.get("blocks") or []:
        if block.get("type") in ("section", "header"):
            if "text" in block:
                parts.append(block["text"]["text"])
            parts.extend(field["text"] for field in block.get("fields", []))
    return "\n".join(parts)
