"""Requests signed and shaped exactly as Slack sends them to a Bolt app over HTTP.

Written from Slack's published scheme, deliberately without slack_sdk: the bot verifies with
slack_sdk's ``SignatureVerifier``, and a test that signed with the same code could not catch a
mistake shared by both sides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
VERIFICATION_TOKEN = "fake-verification-token"  # Slack's deprecated per-app token field
TEAM_DOMAIN = "eventmesh-test"


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}`` keyed by the signing secret."""
    basestring = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str,
    body: bytes,
    timestamp: int | None = None,
    content_type: str = FORM_CONTENT_TYPE,
) -> dict[str, str]:
    """Headers Slack sends with ``body``; pass an old ``timestamp`` to test replay refusal.

    Commands and clicks come form-encoded; events (``event_callback_body``) as JSON.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(secret, ts, body),
    }


def slash_command_body(
    command: str,
    text: str,
    *,
    user_id: str = "U0USER",
    user_name: str = "someone",
    channel_id: str = "C0OPS",
    channel_name: str = "ops",
    response_url: str,
    trigger_id: str = "1.2.3",
    team_id: str = "T0TEST",
    api_app_id: str = "A0APP",
) -> bytes:
    """The form body of a slash command, with every field Slack sends, in Slack's order."""
    fields = [
        ("token", VERIFICATION_TOKEN),
        ("team_id", team_id),
        ("team_domain", TEAM_DOMAIN),
        ("enterprise_id", ""),
        ("channel_id", channel_id),
        ("channel_name", channel_name),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", command),
        ("text", text),
        ("api_app_id", api_app_id),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger_id),
    ]
    return urlencode(fields).encode()


def block_actions_body(
    action_id: str,
    value: str,
    *,
    user_id: str = "U0USER",
    user_name: str = "someone",
    channel_id: str = "C0OPS",
    channel_name: str = "ops",
    message_ts: str = "1700000000.000100",
    response_url: str,
    block_id: str = "b1",
    message: dict[str, Any] | None = None,
    team_id: str = "T0TEST",
    api_app_id: str = "A0APP",
    selected_options: list[dict[str, Any]] | None = None,
) -> bytes:
    """The form body of a button click: one ``payload`` field holding the JSON Slack sends.

    ``message`` is the clicked message (e.g. ``fake.messages[(channel, ts)]``); by default a
    bare bot message with ``message_ts``. With ``selected_options`` it is a click on a
    checkboxes element instead: Slack sends the options selected after the click, no value.
    """
    if message is None:
        message = {
            "type": "message",
            "user": "U0BOT",
            "bot_id": "B0BOT",
            "text": "",
            "ts": message_ts,
        }
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": "1.2.3",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            _button_pressed(action_id, value, block_id)
            if selected_options is None
            else _checkboxes_pressed(action_id, selected_options, block_id)
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def _button_pressed(action_id: str, value: str, block_id: str) -> dict[str, Any]:
    """The ``actions`` entry of a click on a button."""
    return {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": action_id, "emoji": True},
        "value": value,
        "type": "button",
        "action_ts": f"{time.time():.6f}",
    }


def _checkboxes_pressed(
    action_id: str, selected_options: list[dict[str, Any]], block_id: str
) -> dict[str, Any]:
    """The ``actions`` entry of a click on a checkboxes element."""
    return {
        "action_id": action_id,
        "block_id": block_id,
        "selected_options": selected_options,
        "type": "checkboxes",
        "action_ts": f"{time.time():.6f}",
    }


def app_home_opened_event(
    user_id: str = "U0USER",
    *,
    tab: str = "home",
    view: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``app_home_opened`` event as Slack sends it: ``view`` is the Home view the user is
    shown, present once the app published one (Slack leaves it out before)."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user_id,
        "channel": "D" + user_id[1:],  # the user's conversation with the app
        "tab": tab,
        "event_ts": f"{time.time():.6f}",
    }
    if view is not None:
        event["view"] = view
    return event


def event_callback_body(
    event: dict[str, Any], *, team_id: str = "T0TEST", api_app_id: str = "A0APP"
) -> bytes:
    """The JSON body of an Events API delivery (``event_callback``) wrapping ``event``."""
    envelope = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": "U0BOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + uuid.uuid4().hex,
    }
    return json.dumps(envelope).encode()


def home_block_actions_body(
    action_id: str,
    value: str,
    *,
    user_id: str,
    block_id: str,
    view: dict[str, Any],
    team_id: str = "T0TEST",
    api_app_id: str = "A0APP",
) -> bytes:
    """A button click on the user's App Home tab: the container is the view, not a message,
    and Slack sends no channel and no response_url with it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower()},
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "view", "view_id": view.get("id", "V0HOME")},
        "trigger_id": "1.2.3",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": {**view, "type": "home"},
        "actions": [_button_pressed(action_id, value, block_id)],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()
