"""Bolt wiring: Slack's payloads in, the shared dispatcher out.

The only module that imports slack_bolt's app. Listeners translate Bolt's arguments into
CommandRequest / ActionRequest / EventRequest and an ack function; everything else is the
dispatcher's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.chat import Message
from bot.slack.dispatch import ActionRequest, CommandRequest, Dispatcher, EventRequest

log = logging.getLogger(__name__)

# The HTTP adapter stamps each request when it arrives, so the ack latency metric includes
# Bolt's own work (signature check, auth.test); in Socket Mode the listener's start stands in.
RECEIVED_AT = "eventmesh_received_at"


def create_bolt_app(
    dispatcher: Dispatcher, *, client: AsyncWebClient, signing_secret: str | None
) -> AsyncApp:
    app = AsyncApp(
        client=client,
        # Socket Mode has no signatures (Bolt skips the check for it); HTTP mode always has one.
        signing_secret=signing_secret or "",
        name="eventmesh-bot",
        logger=logging.getLogger("slack_bolt"),
    )

    async def on_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
        request = CommandRequest(
            command=command.get("command", ""),
            text=command.get("text") or "",
            user_id=command.get("user_id", ""),
            channel_id=command.get("channel_id", ""),
            response_url=command.get("response_url"),
            received_at=context.get(RECEIVED_AT) or time.perf_counter(),
        )

        async def reply(message: Message | None) -> None:
            if message is None:
                await ack()
            else:
                await ack(text=message.text, blocks=message.blocks, response_type="ephemeral")

        await dispatcher.handle_command(request, reply)

    async def on_action(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        pressed = (body.get("actions") or [{}])[0]
        container = body.get("container") or {}
        request = ActionRequest(
            action_id=pressed.get("action_id", ""),
            value=pressed.get("value") or "",
            user_id=(body.get("user") or {}).get("id", ""),
            channel_id=container.get("channel_id") or (body.get("channel") or {}).get("id", ""),
            message_ts=container.get("message_ts"),
            response_url=body.get("response_url"),
            block_id=pressed.get("block_id"),
            received_at=context.get(RECEIVED_AT) or time.perf_counter(),
        )

        async def reply(message: Message | None) -> None:
            # A button's ack carries no message; anything for the user goes to response_url.
            await ack()
            if message is not None:
                await respond(
                    text=message.text,
                    blocks=message.blocks,
                    response_type="ephemeral",
                    replace_original=False,
                )

        await dispatcher.handle_action(request, reply)

    async def on_event(event: dict[str, Any], context: AsyncBoltContext) -> None:
        request = EventRequest(
            event_type=str(event.get("type") or ""),
            user_id=str(event.get("user") or ""),
            event=event,
            received_at=context.get(RECEIVED_AT) or time.perf_counter(),
        )

        async def acked(message: Message | None) -> None:
            """Bolt acked the event before this listener ran; an event takes no answer."""

        await dispatcher.handle_event(request, acked)

    for name in dispatcher.commands:
        app.command(name)(on_command)
    for action_id in dispatcher.actions:
        app.action(action_id)(on_action)
    for event_type in dispatcher.events:
        app.event(event_type)(on_event)
    return app


class SlackRefused(Exception):
    """Slack refused a token at start-up; the message names the variable and the fix."""


# Errors that mean "this token will never work", as opposed to Slack being briefly unreachable.
_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "account_inactive"}
)


async def verify_tokens(client: AsyncWebClient, app_token: str | None) -> None:
    """Fail fast on a wrong token instead of answering every command with an error.

    If Slack cannot be reached right now the bot starts anyway: Bolt and the Socket Mode
    client retry, and /healthz stays honest about the process being up.
    """
    checks: list[tuple[str, str, Callable[[], Awaitable[object]]]] = [
        ("SLACK_BOT_TOKEN", "xoxb-", client.auth_test)
    ]
    if app_token is not None:
        checks.append(
            ("SLACK_APP_TOKEN", "xapp-", lambda: client.apps_connections_open(app_token=app_token))
        )
    for variable, prefix, check in checks:
        try:
            await check()
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in _TOKEN_ERRORS:
                raise SlackRefused(
                    f"Slack refused {variable} ({error}): it must be the {prefix}… token of this "
                    "app, from the app's settings page"
                ) from None
            log.warning("could not check %s with Slack (%s); starting anyway", variable, error)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            log.warning("could not reach Slack to check %s (%s); starting anyway", variable, exc)


def socket_mode_handler(app: AsyncApp, app_token: str) -> AsyncSocketModeHandler:
    """Made here so that only bot/slack imports slack_bolt (the runtime just starts it)."""
    return AsyncSocketModeHandler(app, app_token)
