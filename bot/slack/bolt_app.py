"""Bolt wiring: Slack's payloads in, the shared dispatcher out.

The only module that imports slack_bolt's app. Listeners translate Bolt's arguments into
CommandRequest / ActionRequest / EventRequest and an ack function; everything else is the
dispatcher's.

Requests are authorized from what the bot learned at start-up (`BotIdentity`: the bot token,
and the bot's ids from auth.test), never with a call to Slack on the request path: Bolt's
default single-workspace authorization calls auth.test on a process's first request, and with
Slack's API unreachable then, that command got an error or no answer at all. With Slack
unreachable at start the ids are learned later, in the background (`learn_identity`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.chat import Message
from bot.slack.dispatch import ActionRequest, CommandRequest, Dispatcher, EventRequest

log = logging.getLogger(__name__)

# The HTTP adapter stamps each request when it arrives, so the ack latency metric includes
# Bolt's own work (signature check, auth.test); in Socket Mode the listener's start stands in.
RECEIVED_AT = "eventmesh_received_at"


@dataclass
class BotIdentity:
    """Who the bot is in its workspace: its token, and the ids auth.test tells."""

    bot_token: str
    team_id: str | None = None
    enterprise_id: str | None = None
    bot_user_id: str | None = None
    bot_id: str | None = None
    known: bool = False

    def learn(self, answer: Mapping[str, Any]) -> None:
        """Take the ids from auth.test's answer."""
        self.team_id = answer.get("team_id") or self.team_id
        self.enterprise_id = answer.get("enterprise_id") or self.enterprise_id
        self.bot_user_id = answer.get("user_id") or self.bot_user_id
        self.bot_id = answer.get("bot_id") or self.bot_id
        self.known = True

    def authorization(
        self, enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=enterprise_id or self.enterprise_id,
            team_id=team_id or self.team_id,
            bot_token=self.bot_token,
            bot_user_id=self.bot_user_id,
            bot_id=self.bot_id,
            user_id=user_id,
        )


def create_bolt_app(
    dispatcher: Dispatcher,
    *,
    client: AsyncWebClient,
    signing_secret: str | None,
    identity: BotIdentity,
) -> AsyncApp:
    """The Bolt app. `client` carries no token (Bolt gives each request the one `identity`
    authorizes with) and is what Bolt copies base_url from."""

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return identity.authorization(enterprise_id, team_id, user_id)

    app = AsyncApp(
        client=client,
        authorize=authorize,
        # Socket Mode has no signatures (Bolt skips the check for it); HTTP mode always has one.
        signing_secret=signing_secret or "",
        name="eventmesh-bot",
        logger=logging.getLogger("slack_bolt"),
        # Bolt's other way runs each listener as a task and looks for its ack every 10 ms:
        # ~5 ms more per ack, and 100 wake-ups a second per command waiting. Here a listener
        # returns as soon as the dispatcher has acked (`_until_acked`).
        process_before_response=True,
    )

    async def on_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
        answer = _Acked(ack)
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
                await answer()
            else:
                await answer(text=message.text, blocks=message.blocks, response_type="ephemeral")

        await _until_acked(answer, dispatcher.handle_command(request, reply))

    async def on_action(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        answer = _Acked(ack)
        pressed = (body.get("actions") or [{}])[0]
        container = body.get("container") or {}
        request = ActionRequest(
            action_id=pressed.get("action_id", ""),
            value=pressed.get("value") or _selected(pressed),
            user_id=(body.get("user") or {}).get("id", ""),
            channel_id=container.get("channel_id") or (body.get("channel") or {}).get("id", ""),
            message_ts=container.get("message_ts"),
            response_url=body.get("response_url"),
            block_id=pressed.get("block_id"),
            received_at=context.get(RECEIVED_AT) or time.perf_counter(),
        )

        async def reply(message: Message | None) -> None:
            # A button's ack carries no message; anything for the user goes to response_url,
            # through the outbox like every other reply.
            await answer()
            if message is not None and request.response_url:
                await dispatcher.services.chat.respond(request.response_url, message)

        await _until_acked(answer, dispatcher.handle_action(request, reply))

    async def on_event(event: dict[str, Any], context: AsyncBoltContext) -> None:
        request = EventRequest(
            event_type=str(event.get("type") or ""),
            user_id=str(event.get("user") or ""),
            event=event,
            received_at=context.get(RECEIVED_AT) or time.perf_counter(),
        )

        done = _Acked(None)

        async def acked(message: Message | None) -> None:
            """Bolt acks the event once this listener returns; an event takes no answer."""
            await done()

        await _until_acked(done, dispatcher.handle_event(request, acked))

    for name in dispatcher.commands:
        app.command(name)(on_command)
    for action_id in dispatcher.actions:
        app.action(action_id)(on_action)
    for event_type in dispatcher.events:
        app.event(event_type)(on_event)
    return app


class _Acked:
    """Bolt's ack, and a future that is done once it was sent (or its sending failed)."""

    def __init__(self, ack: AsyncAck | None) -> None:
        self._ack = ack
        self.sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def __call__(self, **kwargs: Any) -> None:
        try:
            if self._ack is not None:
                await self._ack(**kwargs)
        finally:
            if not self.sent.done():
                self.sent.set_result(None)


# The dispatches that outlive their listener: referenced until done (asyncio keeps only weak
# references to tasks).
_dispatching: set[asyncio.Task[None]] = set()


async def _until_acked(ack: _Acked, dispatch: Awaitable[None]) -> None:
    """Run the dispatch (admit, ack, audit, hand off) and return once it has acked, so Bolt
    answers Slack then; the rest of the dispatch goes on in its task."""
    task = asyncio.ensure_future(dispatch)
    _dispatching.add(task)
    task.add_done_callback(_dispatch_done)
    await asyncio.wait({ack.sent, task}, return_when=asyncio.FIRST_COMPLETED)


def _dispatch_done(task: asyncio.Task[None]) -> None:
    _dispatching.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # The dispatcher answers every failure itself; this is the last line of defence.
        log.error("a dispatch failed", exc_info=task.exception())


class SlackRefused(Exception):
    """Slack refused a token at start-up; the message names the variable and the fix."""


# Errors that mean "this token will never work", as opposed to Slack being briefly unreachable.
_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "account_inactive"}
)


async def verify_tokens(client: AsyncWebClient, app_token: str | None) -> Mapping[str, Any] | None:
    """Fail fast on a wrong token instead of answering every command with an error; returns
    auth.test's answer (the bot's ids), or None when Slack could not be asked.

    If Slack cannot be reached right now the bot starts anyway: requests are authorized from
    the token alone meanwhile, the Socket Mode client retries, and /healthz stays honest about
    the process being up.
    """
    answer: Mapping[str, Any] | None = None
    checks: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
        ("SLACK_BOT_TOKEN", "xoxb-", client.auth_test)
    ]
    if app_token is not None:
        checks.append(
            ("SLACK_APP_TOKEN", "xapp-", lambda: client.apps_connections_open(app_token=app_token))
        )
    for variable, prefix, check in checks:
        try:
            result = await check()
        except SlackApiError as exc:
            error = (
                str(exc.response.get("error", "")) if isinstance(exc.response.data, dict) else ""
            )
            if error in _TOKEN_ERRORS:
                raise SlackRefused(
                    f"Slack refused {variable} ({error}): it must be the {prefix}… token of this "
                    "app, from the app's settings page"
                ) from None
            log.warning(
                "could not check %s with Slack (%s); starting anyway",
                variable,
                error or f"HTTP {exc.response.status_code}",
            )
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            log.warning("could not reach Slack to check %s (%s); starting anyway", variable, exc)
        else:
            if variable == "SLACK_BOT_TOKEN":
                answer = result.data if isinstance(result.data, dict) else None
    return answer


async def learn_identity(
    client: AsyncWebClient, identity: BotIdentity, *, first_wait_s: float = 5.0
) -> None:
    """Ask auth.test until Slack answers (5 s, then longer apart, at most a minute)."""
    wait = first_wait_s
    while not identity.known:
        await asyncio.sleep(wait)
        try:
            answer = await client.auth_test()
        except (SlackApiError, OSError, TimeoutError, aiohttp.ClientError) as exc:
            log.debug("auth.test still failing: %s", exc)
            wait = min(60.0, wait * 2)
            continue
        identity.learn(answer.data if isinstance(answer.data, dict) else {})
        log.info("learned the bot's identity from Slack: user %s", identity.bot_user_id)


async def know_identity(
    client: AsyncWebClient, identity: BotIdentity, app_token: str | None
) -> asyncio.Task[None] | None:
    """Check the tokens (raises SlackRefused for a wrong one) and learn the bot's ids now, or,
    with Slack unreachable, in the background: returns that task (cancel it at shutdown)."""
    answer = await verify_tokens(client, app_token)
    if answer is not None:
        identity.learn(answer)
        return None
    return asyncio.create_task(learn_identity(client, identity), name="identity")


def socket_mode_handler(app: AsyncApp, app_token: str) -> AsyncSocketModeHandler:
    """Made here so that only bot/slack imports slack_bolt (the runtime just starts it)."""
    return AsyncSocketModeHandler(app, app_token)


def _selected(pressed: dict[str, Any]) -> str:
    """A checkbox element's press carries no value, but the options selected after it: the
    value of the one selected ("" when none is), as our checklists put one option in each."""
    options = pressed.get("selected_options") or []
    return ",".join(str(option.get("value") or "") for option in options)
