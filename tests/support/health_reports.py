"""Reading the bot's /health messages out of the Slack fake, as a person would read them."""

from __future__ import annotations

import struct
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


def header_of(message: dict[str, Any]) -> str:
    for block in message.get("blocks") or []:
        if block.get("type") == "header":
            return str(block["text"]["text"])
    return ""


def context_of(message: dict[str, Any]) -> str:
    return " ".join(
        element["text"]
        for block in message.get("blocks") or []
        if block.get("type") == "context"
        for element in block["elements"]
    )


def first_message(fake: SlackFake, channel: str) -> dict[str, Any] | None:
    """The channel's first message as it reads now (a watch's one message, a snapshot)."""
    messages = fake.channel_messages(channel)
    return messages[0] if messages else None


def stop_value(message: dict[str, Any]) -> str:
    """The value of a watch message's Stop button: the watch's id."""
    (value,) = [
        element["value"]
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == "watch_stop"
    ]
    return str(value)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG header: the signature, then the IHDR chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", png[16:24])
    return width, height
