"""Reading incident messages out of the Slack fake, as a person would read them."""

from __future__ import annotations

from typing import Any


def actions_block_id(message: dict[str, Any]) -> str | None:
    """The block_id of the message's buttons (it carries the state they were shown for)."""
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            return str(block["block_id"])
    return None


def buttons(message: dict[str, Any]) -> list[str]:
    return [
        element["text"]["text"]
        for block in message.get("blocks") or []
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


def shown(message: dict[str, Any]) -> str:
    """Everything a person reads in a message: fallback, header, sections, fields, context."""
    parts = [message.get("text", "")]
    for block in message.get("blocks") or []:
        if block.get("type") in ("section", "header"):
            if "text" in block:
                parts.append(block["text"]["text"])
            parts.extend(field["text"] for field in block.get("fields", []))
        elif block.get("type") == "context":
            parts.extend(element["text"] for element in block["elements"])
    return "\n".join(parts)
