"""The offline Slack harness, exercised over real HTTP by slack_sdk's own clients.

Other tests trust the fake to reject what Slack rejects and the signer to sign what Slack
signs; these tests are what earns that trust.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookClient

from tests.support.slack_fake import ApiCall, SlackFake, block_kit_errors
from tests.support.slack_signing import (
    block_actions_body,
    signature,
    signed_headers,
    slash_command_body,
)
from tests.support.socket_mode_fake import Ack, SocketModeFake

TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(action_id: str, text: str = "Go", value: str = "v") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }


@pytest.fixture
def fake() -> Iterator[SlackFake]:
    with SlackFake(TOKEN) as running:
        yield running


@pytest.fixture
def client(fake: SlackFake) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url)


# -- messages ----------------------------------------------------------------------------------


def test_post_then_update_round_trip(fake: SlackFake, client: WebClient) -> None:
    first = client.chat_postMessage(channel="C0OPS", text="deploying", blocks=[section("*1/3*")])
    second = client.chat_postMessage(channel="C0OPS", text="detail", thread_ts=first["ts"])
    assert first["ok"] and first["channel"] == "C0OPS"
    assert float(second["ts"]) > float(first["ts"])
    assert second["message"]["thread_ts"] == first["ts"]

    updated = client.chat_update(
        channel="C0OPS", ts=first["ts"], text="deployed", blocks=[section("*3/3* done")]
    )

    assert updated["ts"] == first["ts"]
    assert fake.messages[("C0OPS", first["ts"])]["blocks"] == [section("*3/3* done")]
    assert [m["text"] for m in fake.channel_messages("C0OPS")] == ["deployed", "detail"]
    assert [c.method for c in fake.calls] == ["chat.postMessage"] * 2 + ["chat.update"]
    assert fake.calls[0].args["blocks"] == [section("*1/3*")]
    assert fake.calls[0].token == TOKEN
    assert fake.rejected == []


def test_update_keeps_blocks_left_out_and_removes_them_with_empty_list(
    fake: SlackFake, client: WebClient
) -> None:
    """Slack documents that chat.update keeps blocks it is not sent; [] removes them."""
    ts = client.chat_postMessage(channel="C0OPS", text="t", blocks=[section("b")])["ts"]

    client.chat_update(channel="C0OPS", ts=ts, text="text only")
    assert fake.messages[("C0OPS", ts)]["blocks"] == [section("b")]

    client.chat_update(channel="C0OPS", ts=ts, text="no blocks", blocks=[])
    assert "blocks" not in fake.messages[("C0OPS", ts)]
    assert fake.messages[("C0OPS", ts)]["text"] == "no blocks"


def test_update_needs_an_existing_message_and_content(client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C0OPS", text="t")["ts"]
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel="C0OPS", ts="1.000001", text="x")
    with pytest.raises(SlackApiError, match="no_text"):
        client.api_call("chat.update", json={"channel": "C0OPS", "ts": ts})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C0OPS"}, "no_text"),
        ({"text": "x"}, "channel_not_found"),
        ({"channel": "C0OPS", "text": "x" * 40_001}, "msg_too_long"),
    ],
)
def test_post_message_errors(
    fake: SlackFake, client: WebClient, kwargs: dict[str, str], error: str
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.postMessage", json=kwargs)
    assert caught.value.response["error"] == error
    assert fake.messages == {}


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param([{"type": "divider"}] * 51, id="51-blocks"),
        pytest.param([section("x" * 3001)], id="3001-char-section"),
    ],
)
def test_invalid_blocks_raise_slack_api_error(
    fake: SlackFake, client: WebClient, blocks: list[dict[str, Any]]
) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OPS", text="fallback", blocks=blocks)
    assert caught.value.response["error"] == "invalid_blocks"
    assert caught.value.response["errors"]
    assert fake.messages == {}
    assert fake.rejected and fake.rejected[0].startswith("chat.postMessage: invalid_blocks")


def test_form_encoded_blocks_arrive_as_json_text(fake: SlackFake, client: WebClient) -> None:
    """Callers using form data send blocks as a JSON string, which Slack decodes."""
    client.api_call(
        "chat.postMessage",
        params={"channel": "C0OPS", "text": "t", "blocks": json.dumps([section("hi")])},
    )
    assert fake.channel_messages("C0OPS")[0]["blocks"] == [section("hi")]


def test_ephemeral_and_direct_messages(fake: SlackFake, client: WebClient) -> None:
    dm = client.conversations_open(users="U0USER")["channel"]["id"]
    client.chat_postMessage(channel="U0USER", text="to the user id")
    client.chat_postMessage(channel=dm, text="to the DM id")
    ephemeral = client.chat_postEphemeral(channel="C0OPS", user="U0USER", text="only you")

    assert dm.startswith("D")
    assert [m["text"] for m in fake.channel_messages(dm)] == ["to the user id", "to the DM id"]
    assert ephemeral["message_ts"]
    assert fake.channel_messages("C0OPS") == []
    with pytest.raises(SlackApiError, match="user_not_found"):
        client.api_call("chat.postEphemeral", json={"channel": "C0OPS", "text": "nobody"})


def test_users_info_and_async_client_get_requests(fake: SlackFake) -> None:
    """AsyncWebClient sends users.info as a GET with a query string, unlike WebClient."""

    async def run() -> tuple[dict[str, Any], str]:
        client = AsyncWebClient(token=TOKEN, base_url=fake.api_url)
        user = (await client.users_info(user="U0USER"))["user"]
        posted = await client.chat_postMessage(channel="C0OPS", text="async")
        return user, posted["ts"]

    user, ts = asyncio.run(run())
    assert {"id", "name", "real_name", "tz"} <= user.keys()
    assert user["id"] == "U0USER"
    assert fake.messages[("C0OPS", ts)]["text"] == "async"


def test_conversations_info_and_users_info_answer_like_slack(fake: SlackFake) -> None:
    fake.missing.update({"C0GONE", "U0GONE"})
    fake.not_joined.add("C0OUTSIDE")
    client = WebClient(token=TOKEN, base_url=fake.api_url)
    assert client.conversations_info(channel="C0OPS")["channel"]["is_member"] is True
    assert client.conversations_info(channel="C0OUTSIDE")["channel"]["is_member"] is False
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.conversations_info(channel="C0GONE")
    with pytest.raises(SlackApiError, match="user_not_found"):
        client.users_info(user="U0GONE")


# -- Block Kit validator -----------------------------------------------------------------------


def test_block_kit_accepts_a_typical_runbook_message() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Deploy 1.4.2"}},
        {**section("*stage* canary"), "accessory": button("details")},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"f{i}"} for i in range(10)]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "by <@U0USER>"}]},
        {"type": "divider"},
        {
            "type": "actions",
            "block_id": "controls",
            "elements": [button("approve", "Approve") | {"style": "primary"}, button("abort")],
        },
    ]
    assert block_kit_errors(blocks) == []


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param({"type": "divider"}, id="not-a-list"),
        pytest.param([{"type": "video"}], id="unknown-type"),
        pytest.param([{"type": "section"}], id="section-without-text-or-fields"),
        pytest.param(
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
            id="11-fields",
        ),
        pytest.param(
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
            id="2001-char-field",
        ),
        pytest.param(
            [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}], id="mrkdwn-header"
        ),
        pytest.param(
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            id="151-char-header",
        ),
        pytest.param(
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
            id="11-context-elements",
        ),
        pytest.param(
            [{"type": "actions", "elements": [button(f"a{i}") for i in range(26)]}],
            id="26-actions",
        ),
        pytest.param([{"type": "actions", "elements": [button("a", "t" * 76)]}], id="button-76"),
        pytest.param(
            [{"type": "actions", "elements": [button("a", value="v" * 2001)]}], id="value-2001"
        ),
        pytest.param([{"type": "actions", "elements": [button("a" * 256)]}], id="action-id-256"),
        pytest.param([{**section("s"), "block_id": "b" * 256}], id="block-id-256"),
        pytest.param(
            [{"type": "section", "text": {"type": "markdown", "text": "s"}}], id="text-type"
        ),
        pytest.param([section("")], id="empty-text"),
    ],
)
def test_block_kit_rejects(blocks: object) -> None:
    assert block_kit_errors(blocks)


# -- failures and auth -------------------------------------------------------------------------


def test_ratelimited_answers_429_with_retry_after(fake: SlackFake, client: WebClient) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0OPS", text="t")
    response = caught.value.response
    assert response.status_code == 429
    assert response["error"] == "ratelimited"
    assert {k.lower(): v for k, v in response.headers.items()}["retry-after"] in ("7", ["7"])


def test_rate_limit_retry_handler_retries_then_succeeds(fake: SlackFake) -> None:
    client = WebClient(
        token=TOKEN,
        base_url=fake.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.fail_next("chat.postMessage", retry_after=0)

    assert client.chat_postMessage(channel="C0OPS", text="t")["ok"]

    first, second = fake.calls_to("chat.postMessage")
    assert (first.status, first.error) == (429, "ratelimited")
    assert (second.status, second.error) == (200, None)
    assert len(fake.messages) == 1
    assert fake.rejected == []  # injected failures are not the bot's fault


def test_fail_next_other_errors_answer_200_ok_false(fake: SlackFake, client: WebClient) -> None:
    fake.fail_next("chat.update", "channel_not_found")
    ts = client.chat_postMessage(channel="C0OPS", text="t")["ts"]
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C0OPS", ts=ts, text="u")
    assert (caught.value.response.status_code, caught.value.response["error"]) == (
        200,
        "channel_not_found",
    )
    assert client.chat_update(channel="C0OPS", ts=ts, text="u")["ok"]


@pytest.mark.parametrize(("token", "error"), [(None, "not_authed"), ("xoxb-wrong", "invalid_auth")])
def test_bad_token_is_refused(fake: SlackFake, token: str | None, error: str) -> None:
    with pytest.raises(SlackApiError) as caught:
        WebClient(token=token, base_url=fake.api_url).chat_postMessage(channel="C0OPS", text="t")
    assert caught.value.response["error"] == error
    assert fake.calls_to("chat.postMessage")[0].token == token
    assert fake.messages == {}


def test_auth_test_and_unknown_method(fake: SlackFake, client: WebClient) -> None:
    auth = client.auth_test()
    assert (auth["team_id"], auth["user_id"], auth["bot_id"]) == ("T0TEST", "U0BOT", "B0BOT")
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.teleport")
    assert caught.value.response["error"] == "unknown_method"


# -- Socket Mode -------------------------------------------------------------------------------


@pytest.fixture
def socket_mode(fake: SlackFake) -> Iterator[SocketModeFake]:
    with SocketModeFake() as server:
        fake.socket_mode = server
        yield server


@pytest.mark.parametrize(
    ("token", "error"),
    [
        (APP_TOKEN, None),
        (TOKEN, "not_allowed_token_type"),
        ("xapp-wrong", "invalid_auth"),
        (None, "not_authed"),
    ],
    ids=["app-token", "bot-token", "unknown-token", "no-token"],
)
def test_apps_connections_open_takes_only_the_app_token(
    fake: SlackFake, socket_mode: SocketModeFake, token: str | None, error: str | None
) -> None:
    client = WebClient(base_url=fake.api_url)
    if error is None:
        url = client.apps_connections_open(app_token=token)["url"]
        assert url.startswith(f"{socket_mode.base_url}/link/?ticket=")
    else:
        with pytest.raises(SlackApiError) as caught:
            client.apps_connections_open(app_token=token)
        assert caught.value.response["error"] == error
    assert fake.calls_to("apps.connections.open")[0].token == token


def test_app_token_is_refused_on_other_methods(fake: SlackFake) -> None:
    """An xapp- token opens sockets and nothing else: it cannot post as the bot."""
    with pytest.raises(SlackApiError) as caught:
        WebClient(token=APP_TOKEN, base_url=fake.api_url).chat_postMessage(channel="C", text="t")
    assert caught.value.response["error"] == "not_allowed_token_type"
    assert fake.messages == {}


def test_apps_connections_open_without_a_socket_server_says_so(fake: SlackFake) -> None:
    with pytest.raises(SlackApiError) as caught:
        WebClient(base_url=fake.api_url).apps_connections_open(app_token=APP_TOKEN)
    assert caught.value.response["error"] == "socket_mode_not_enabled"


def test_socket_mode_round_trip_with_slack_sdks_own_client(
    fake: SlackFake, socket_mode: SocketModeFake
) -> None:
    """slack_sdk's aiohttp client connects, acks, answers pings and follows a refresh."""
    hellos: list[dict[str, Any]] = []

    async def on_message(_: Any, message: dict[str, Any], raw: str | None) -> None:
        if message.get("type") == "hello":
            hellos.append(message)

    async def on_request(client: SocketModeClient, request: SocketModeRequest) -> None:
        payload = {"text": f"got {request.payload['text']}"} if "text" in request.payload else None
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload))

    async def run() -> tuple[str, Ack, Ack]:
        client = SocketModeClient(APP_TOKEN, web_client=AsyncWebClient(base_url=fake.api_url))
        client.message_listeners.append(on_message)
        client.socket_mode_request_listeners.append(on_request)
        try:
            await client.connect()
            first_url = str(client.wss_uri)
            first = await asyncio.to_thread(socket_mode.wait_for_connection, 1)
            command = await asyncio.to_thread(
                socket_mode.slash_command, "/health", "staging", response_url=fake.response_url()
            )
            command_ack = await asyncio.to_thread(socket_mode.wait_for_ack, command.envelope_id)
            await asyncio.to_thread(socket_mode.ping)

            await asyncio.to_thread(socket_mode.request_refresh)
            await asyncio.to_thread(socket_mode.wait_for_connection, 2)
            await asyncio.to_thread(socket_mode.wait_for, lambda _: not first.open)
            click = await asyncio.to_thread(
                socket_mode.block_actions, "health_recheck", "staging", response_url="http://r"
            )
            click_ack = await asyncio.to_thread(socket_mode.wait_for_ack, click.envelope_id)
        finally:
            await client.close()
        return first_url, command_ack, click_ack

    first_url, command_ack, click_ack = asyncio.run(run())

    assert [h["connection_info"] for h in hellos] == [{"app_id": "A0APP"}] * 2
    assert (command_ack.payload, command_ack.connection) == ({"text": "got staging"}, 1)
    assert (click_ack.payload, click_ack.connection) == (None, 2)
    assert socket_mode.envelopes[click_ack.envelope_id].payload["actions"][0]["value"] == "staging"
    assert [c.token for c in fake.calls_to("apps.connections.open")] == [APP_TOKEN] * 2
    socket_mode.wait_for(lambda f: not any(c.open for c in f.connections), timeout=5)
    assert [c.close_code for c in socket_mode.connections] == [1000, 1000]
    assert all(c.client_pings >= 1 for c in socket_mode.connections)
    assert socket_mode.rejected == []
    # Tickets are single use, as Slack's are: the first URL cannot open a second session.
    assert ws_upgrade_status(first_url) == 401
    assert socket_mode.rejected and "used ticket" in socket_mode.rejected[0]


def ws_upgrade_status(url: str) -> int:
    """The HTTP status a WebSocket upgrade to ``url`` is refused with."""

    async def attempt() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url):
                    return 101
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    return asyncio.run(attempt())


# -- response_url ------------------------------------------------------------------------------


def test_response_url_records_json_and_answers_ok(fake: SlackFake) -> None:
    url = fake.response_url()
    sent = WebhookClient(url).send(text="checking", response_type="ephemeral")
    assert (sent.status_code, sent.body) == (200, "ok")
    assert fake.responses == [{"text": "checking", "response_type": "ephemeral", "url": url}]


def test_response_url_rejects_like_slack(fake: SlackFake) -> None:
    url = fake.response_url()
    assert WebhookClient(url).send(text="t", blocks=[section("x" * 3001)]).status_code == 400
    assert WebhookClient(fake.base_url + "/response/never-issued").send(text="t").status_code == 404
    assert [WebhookClient(url).send(text=str(i)).status_code for i in range(6)] == [200] * 5 + [404]
    assert len(fake.responses) == 5


# -- wait_for ----------------------------------------------------------------------------------


def test_wait_for_wakes_when_a_call_arrives_from_another_thread(
    fake: SlackFake, client: WebClient
) -> None:
    poster = threading.Thread(target=client.chat_postMessage, kwargs={"channel": "C", "text": "t"})

    def posted(f: SlackFake) -> list[ApiCall]:
        # Started from inside the first evaluation, which holds the fake's lock: the request
        # cannot be recorded until wait_for releases it to wait, so this proves the wake-up.
        if poster.ident is None:
            poster.start()
        return f.calls_to("chat.postMessage")

    (call,) = fake.wait_for(posted, timeout=5)
    poster.join()
    assert call.args["text"] == "t"


def test_wait_for_times_out_with_a_summary(fake: SlackFake, client: WebClient) -> None:
    client.chat_postMessage(channel="C0OPS", text="only this")
    with pytest.raises(AssertionError, match=r"(?s)timed out.*chat\.postMessage.*only this"):
        fake.wait_for(lambda f: f.calls_to("chat.update"), timeout=0.2)


# -- signing -----------------------------------------------------------------------------------


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_signature_matches_slacks_published_example() -> None:
    """The worked example from Slack's 'Verifying requests from Slack' page."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id="
        b"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert signature(SECRET, 1531420618, body) == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


def test_signed_headers_pass_slack_sdk_verifier_and_tampering_fails(fake: SlackFake) -> None:
    body = slash_command_body("/health", "prod", response_url=fake.response_url())
    headers = signed_headers(SECRET, body, timestamp=1_700_000_000)
    verifier = SignatureVerifier(SECRET, clock=FixedClock(1_700_000_000 + 60))

    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body.replace(b"prod", b"stag"), headers)
    assert not SignatureVerifier(SECRET, clock=FixedClock(1_700_000_000 + 301)).is_valid_request(
        body, headers
    )


def test_slash_command_body_has_every_field_slack_sends() -> None:
    body = slash_command_body("/deploy", "svc 1.2 now", response_url="http://r")
    fields = parse_qs(body.decode(), keep_blank_values=True)
    assert list(fields) == [
        "token", "team_id", "team_domain", "enterprise_id", "channel_id", "channel_name",
        "user_id", "user_name", "command", "text", "api_app_id", "is_enterprise_install",
        "response_url", "trigger_id",
    ]  # fmt: skip
    assert fields["text"] == ["svc 1.2 now"] and fields["command"] == ["/deploy"]


def test_block_actions_body_carries_the_click() -> None:
    message = {"type": "message", "ts": "1700000000.000200", "text": "approve?"}
    body = block_actions_body(
        "approve", "run-7", response_url="http://r", message_ts=message["ts"], message=message
    )
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000200",
        "channel_id": "C0OPS",
        "is_ephemeral": False,
    }
    assert payload["message"] == message and payload["response_url"] == "http://r"
    (action,) = payload["actions"]
    assert (action["action_id"], action["value"], action["type"]) == ("approve", "run-7", "button")


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def test_files_upload_v2_takes_slacks_three_steps(fake: SlackFake, client: WebClient) -> None:
    response = client.files_upload_v2(
        channel="C0OPS", file=PNG, filename="chart.png", title="A chart", initial_comment="hi"
    )
    file_id = response["file"]["id"]
    assert [c.method for c in fake.calls] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    assert fake.calls[0].args == {"filename": "chart.png", "length": str(len(PNG))}
    assert fake.upload_posts == [f"{file_id} 200 {len(PNG)} bytes"]
    (shared,) = fake.files_in("C0OPS")
    assert shared["content"] == PNG
    assert (shared["title"], shared["mimetype"], shared["size"]) == (
        "A chart",
        "image/png",
        len(PNG),
    )
    (message,) = fake.channel_messages("C0OPS")
    assert message["text"] == "hi" and message["files"][0]["id"] == file_id


def test_upload_steps_refuse_like_slack(fake: SlackFake, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as no_name:
        client.files_getUploadURLExternal(filename="", length=10)
    assert no_name.value.response["error"] == "invalid_arguments"

    # Completing a file whose bytes never arrived, or that was completed already.
    pending = client.files_getUploadURLExternal(filename="a.png", length=10)
    with pytest.raises(SlackApiError) as early:
        client.files_completeUploadExternal(files=[{"id": pending["file_id"]}], channel_id="C1")
    assert early.value.response["error"] == "file_not_found"

    done = client.files_upload_v2(channel="C1", content=b"0123456789", filename="a.txt")
    with pytest.raises(SlackApiError) as twice:
        client.files_completeUploadExternal(files=[{"id": done["file"]["id"]}], channel_id="C1")
    assert twice.value.response["error"] == "file_not_found"


def test_the_upload_url_takes_exactly_the_announced_length(fake: SlackFake) -> None:
    async def scenario() -> tuple[int, str, int, str]:
        client = AsyncWebClient(token=TOKEN, base_url=fake.api_url)
        pending = await client.files_getUploadURLExternal(filename="a.png", length=10)
        async with aiohttp.ClientSession() as session:
            async with session.post(pending["upload_url"], data=b"short") as short:
                short_answer = (short.status, await short.text())
            async with session.post(pending["upload_url"], data=b"0123456789") as whole:
                whole_answer = (whole.status, await whole.text())
        return (*short_answer, *whole_answer)

    short_status, short_text, status, text = asyncio.run(scenario())
    assert (short_status, status, text) == (400, 200, "OK - 10")
    assert "length_mismatch" in short_text
    assert any("length_mismatch" in r for r in fake.rejected)
