"""Chat over Slack's Web API (chat.postMessage / chat.update, files_upload_v2, response_url)."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack.chat import ChatError, Message, MessageRef, Upload

DEFAULT_API_URL = "https://slack.com/api/"


def create_web_client(token: str, api_url: str | None) -> AsyncWebClient:
    """A Web API client that rides out Slack's 429s and 5xx instead of dropping messages."""
    base_url = api_url or DEFAULT_API_URL
    if not base_url.endswith("/"):
        base_url += "/"
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def _error_code(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "unknown_error"))


def _chat_error(exc: SlackApiError) -> ChatError:
    """Slack's error code, and its Retry-After when it rate-limited the call."""
    retry_after: float | None = None
    headers = getattr(exc.response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            text = value[0] if isinstance(value, list | tuple) and value else value
            try:
                retry_after = max(0.0, float(str(text)))
            except ValueError:
                retry_after = None
    return ChatError(_error_code(exc), retry_after)


class SlackChat:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        # conversations.open is Tier 3: a user's DM channel never changes, so ask once.
        self._dm_channels: dict[str, str] = {}

    async def post(
        self, channel: str, message: Message, *, thread_ts: str | None = None
    ) -> MessageRef:
        try:
            response = await self.client.chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            raise _chat_error(exc) from exc
        return MessageRef(channel=str(response["channel"]), ts=str(response["ts"]))

    async def update(self, ref: MessageRef, message: Message) -> None:
        try:
            await self.client.chat_update(
                channel=ref.channel, ts=ref.ts, text=message.text, blocks=message.blocks
            )
        except SlackApiError as exc:
            raise _chat_error(exc) from exc

    async def dm(self, user_id: str, message: Message) -> MessageRef:
        channel = self._dm_channels.get(user_id)
        if channel is None:
            try:
                response = await self.client.conversations_open(users=user_id)
            except SlackApiError as exc:
                raise _chat_error(exc) from exc
            channel = str(response["channel"]["id"])
            self._dm_channels[user_id] = channel
        return await self.post(channel, message)

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        """files_upload_v2: files.getUploadURLExternal, the upload, files.completeUploadExternal."""
        try:
            response = await self.client.files_upload_v2(
                channel=channel,
                file=upload.content,
                filename=upload.filename,
                title=upload.title,
                thread_ts=thread_ts,
            )
        except SlackApiError as exc:
            raise _chat_error(exc) from exc
        except SlackRequestError as exc:
            # The upload URL answered other than 200: the bytes never reached Slack.
            raise ChatError("upload_failed") from exc
        return str(response["file"]["id"])

    async def permalink(self, ref: MessageRef) -> str | None:
        try:
            response = await self.client.chat_getPermalink(channel=ref.channel, message_ts=ref.ts)
        except SlackApiError:
            return None  # a refusal without a link still names who holds the lock
        link = response.get("permalink")
        return str(link) if link else None

    async def publish_home(self, user_id: str, blocks: list[dict[str, Any]]) -> None:
        try:
            view = {"type": "home", "blocks": blocks}
            await self.client.views_publish(user_id=user_id, view=view)
        except SlackApiError as exc:
            raise _chat_error(exc) from exc

    async def respond(self, response_url: str, message: Message) -> None:
        webhook = AsyncWebhookClient(response_url, timeout=10)
        response = await webhook.send(
            text=message.text, blocks=message.blocks, response_type="ephemeral"
        )
        if response.status_code != 200:
            raise ChatError(f"response_url answered HTTP {response.status_code}")
