"""Chat over Slack's Web API (chat.postMessage / chat.update, files_upload_v2, response_url).

SlackChat makes one attempt per call and says what went wrong as a ChatError: Slack's error
code and HTTP status, or the transport's own (connection_refused: nothing was sent;
connection_lost, timed_out: it may have been carried out). Retrying is the outbox's business
(bot/slack/outbox.py), because chat.postMessage has no idempotency key: each post carries the
bot's own key in its message metadata, and `find_posted` looks for it in the conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack.chat import (
    CONNECTION_LOST,
    CONNECTION_REFUSED,
    TIMED_OUT,
    ChatError,
    Message,
    MessageRef,
    Upload,
)

DEFAULT_API_URL = "https://slack.com/api/"
# The metadata event every message the bot posts carries, with its outbox key as payload.
EVENT_TYPE = "eventmesh_message"
HISTORY_PAGE = 200  # how far back a lost post is looked for (Slack allows up to 999)

T = TypeVar("T")


def create_web_client(
    token: str | None, api_url: str | None, *, retries: bool = True
) -> AsyncWebClient:
    """A Web API client. With `retries` it rides out Slack's 429s and 5xx by itself (start-up
    checks); the outbox's client has none: a retried post whose answer was lost is a
    duplicate, so the outbox looks before it sends again."""
    base_url = api_url or DEFAULT_API_URL
    if not base_url.endswith("/"):
        base_url += "/"
    handlers = (
        [
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ]
        if retries
        else []
    )
    return AsyncWebClient(token=token, base_url=base_url, timeout=10, retry_handlers=handlers)


def _retry_after(headers: Any) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            text = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(str(text)))
            except ValueError:
                return None
    return None


def _chat_error(exc: SlackApiError) -> ChatError:
    """Slack's error code, its HTTP status, and its Retry-After when it rate-limited the call."""
    response = exc.response
    status = getattr(response, "status_code", None)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    error = str(code) if code else (f"http_{status}" if status and status != 200 else "unknown")
    return ChatError(
        error,
        _retry_after(getattr(response, "headers", None)),
        status=status,
        in_doubt=bool(status and status >= 500),
    )


def _transport_error(exc: BaseException) -> ChatError:
    """What a failure on the way to Slack means for the call: never sent, or unknown."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return ChatError(CONNECTION_REFUSED)
    if isinstance(exc, TimeoutError):
        return ChatError(TIMED_OUT, in_doubt=True)
    return ChatError(CONNECTION_LOST, in_doubt=True)


async def _api(call: Awaitable[T]) -> T:
    try:
        return await call
    except SlackApiError as exc:
        raise _chat_error(exc) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _transport_error(exc) from exc


def _metadata(key: str | None) -> dict[str, Any] | None:
    return None if key is None else {"event_type": EVENT_TYPE, "event_payload": {"key": key}}


class SlackChat:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        # conversations.open is Tier 3: a user's DM channel never changes, so ask once.
        self._dm_channels: dict[str, str] = {}

    async def post(
        self,
        channel: str,
        message: Message,
        *,
        thread_ts: str | None = None,
        key: str | None = None,
    ) -> MessageRef:
        response = await _api(
            self.client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                thread_ts=thread_ts,
                metadata=_metadata(key),
            )
        )
        return MessageRef(channel=str(response["channel"]), ts=str(response["ts"]))

    async def update(self, ref: MessageRef, message: Message) -> None:
        await _api(
            self.client.chat_update(
                channel=ref.channel, ts=ref.ts, text=message.text, blocks=message.blocks
            )
        )

    async def dm_channel(self, user_id: str) -> str:
        """The user's direct conversation with the bot (opened once, then remembered)."""
        channel = self._dm_channels.get(user_id)
        if channel is None:
            response = await _api(self.client.conversations_open(users=user_id))
            channel = str(response["channel"]["id"])
            self._dm_channels[user_id] = channel
        return channel

    async def dm(self, user_id: str, message: Message, *, key: str | None = None) -> MessageRef:
        return await self.post(await self.dm_channel(user_id), message, key=key)

    async def find_posted(
        self,
        key: str,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        thread_ts: str | None = None,
    ) -> MessageRef | None:
        """The message the bot posted with this key, if it is among the conversation's (or
        the thread's) recent messages; None if it is not."""
        where = channel or await self.dm_channel(str(user_id))
        if thread_ts:
            call = self.client.conversations_replies(
                channel=where, ts=thread_ts, include_all_metadata=True, limit=HISTORY_PAGE
            )
        else:
            call = self.client.conversations_history(
                channel=where, include_all_metadata=True, limit=HISTORY_PAGE
            )
        response = await _api(call)
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == EVENT_TYPE and payload.get("key") == key:
                return MessageRef(where, str(message["ts"]))
        return None

    async def find_uploaded(
        self, filename: str, *, channel: str, thread_ts: str | None = None
    ) -> MessageRef | None:
        """The bot's message sharing a file named `filename` among the conversation's (or the
        thread's) recent messages; None if there is none (a file has no metadata to carry a
        key: the name is the key)."""
        if thread_ts:
            call = self.client.conversations_replies(
                channel=channel, ts=thread_ts, limit=HISTORY_PAGE
            )
        else:
            call = self.client.conversations_history(channel=channel, limit=HISTORY_PAGE)
        response = await _api(call)
        for message in response.get("messages") or []:
            if any(f.get("name") == filename for f in message.get("files") or []):
                return MessageRef(channel, str(message["ts"]))
        return None

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        """files_upload_v2: files.getUploadURLExternal, the upload, files.completeUploadExternal."""
        try:
            response = await _api(
                self.client.files_upload_v2(
                    channel=channel,
                    file=upload.content,
                    filename=upload.filename,
                    title=upload.title,
                    thread_ts=thread_ts,
                )
            )
        except SlackRequestError as exc:
            # The upload URL answered other than 200: the bytes never reached Slack.
            raise ChatError("upload_failed") from exc
        return str(response["file"]["id"])

    async def permalink(self, ref: MessageRef) -> str | None:
        try:
            response = await _api(
                self.client.chat_getPermalink(channel=ref.channel, message_ts=ref.ts)
            )
        except ChatError:
            return None  # a refusal without a link still names who holds the lock
        link = response.get("permalink")
        return str(link) if link else None

    async def publish_home(self, user_id: str, blocks: list[dict[str, Any]]) -> None:
        view = {"type": "home", "blocks": blocks}
        await _api(self.client.views_publish(user_id=user_id, view=view))

    async def respond(self, response_url: str, message: Message) -> None:
        # No retries here either: the outbox decides (a reply answered twice is noise).
        webhook = AsyncWebhookClient(response_url, timeout=10, retry_handlers=[])
        try:
            response = await webhook.send(
                text=message.text, blocks=message.blocks, response_type="ephemeral"
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _transport_error(exc) from exc
        status = response.status_code
        if status == 200:
            return
        if status == 429:
            raise ChatError("ratelimited", _retry_after(response.headers), status=429)
        body = (response.body or "").strip()
        # Slack says why a response_url is spent: used_url (5 uses), expired_url (30 minutes).
        error = body if status == 404 and body in ("used_url", "expired_url") else f"http_{status}"
        raise ChatError(error, status=status, in_doubt=status >= 500)
